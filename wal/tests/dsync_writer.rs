//! A WAL's O_DSYNC flushes are written by its executor thread's writer
//! thread when the process has a CPU for it (`src/dsync_writer.rs`). One
//! test in its own process: the CPU check counts the threads that flush.

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn a_lone_wals_flushes_are_written_by_its_executors_writer_thread_and_read_back() {
    let spare_cpu = std::thread::available_parallelism().unwrap().get() > 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::thread::Builder::new()
        .name("coraft-9-1-2".into())
        .spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .make()
                .unwrap()
                .run(async move {
                    let config = coraft_wal::Config::default();
                    let (wal, _) = coraft_wal::Wal::open(&path, config.clone()).await.unwrap();
                    for index in 1..=100u64 {
                        wal.append_entry(7, index, 1, 0, &index.to_le_bytes()).unwrap();
                        if index % 10 == 0 {
                            wal.sync().await.unwrap();
                        }
                    }
                    let names = thread_names();
                    assert_eq!(names.iter().any(|name| name == "walw-9-1-2"), spare_cpu, "{names:?}");
                    wal.close().await.unwrap();
                    let (wal, report) = coraft_wal::Wal::open(&path, config).await.unwrap();
                    assert!(report.torn_tail.is_none());
                    let entries = wal.entries(7, 1..101, usize::MAX).unwrap();
                    assert_eq!(entries.len(), 100);
                    for (entry, index) in entries.iter().zip(1..=100u64) {
                        assert_eq!(&*entry.payload, &index.to_le_bytes());
                    }
                    wal.close().await.unwrap();
                })
        })
        .unwrap()
        .join()
        .unwrap();
    // The writer stopped with its executor's thread.
    assert!(!thread_names().iter().any(|name| name == "walw-9-1-2"));
}
