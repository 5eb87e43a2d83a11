#!/usr/bin/env python3
"""Categorise perf script samples (comm,tid,ip,sym,dso; callchain leaf first)."""
import sys, re, collections
RULES = [
 ('uprobe (measurement)', r'uprobe|exc_int3|handle_swbp|int3'),  # (category, regex on a frame's symbol); first frame from the leaf that matches any rule decides
 ('page faults', r'asm_exc_page_fault|exc_page_fault'),
 ('malloc/free', r'^(malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|_int_memalign|__posix_memalign|unlink_chunk|tcache_|__rust_alloc|__rust_dealloc|__rust_realloc|sysmalloc|systrim|__default_morecore|alloc::raw_vec::finish_grow)'),
 ('send (sendmsg)', r'sendmsg|__sys_sendto|tcp_sendmsg'),
 ('receive (recv)', r'recvmsg|recvfrom|tcp_recvmsg'),
 ('fdatasync/WAL I/O (kernel)', r'fdatasync|ext4_|blkdev|io_write$|io_read$|iomap_'),
 ('session table', r'coraft::runtime::sessions::'),
 ('peer message encode/decode', r'codec::to_wire|codec::from_wire|append_from_archived|expand_coalesced|schema::Envelope'),  # 3 nodes: the Raft messages
 ('client frame decode', r'coraft::runtime::transport::client_requests|CommandArena|coraft::runtime::codec::|check_bytes|rkyv::validation|bytecheck|ArchivedClientRequest'),
 ('answer/response encode', r'Group::answer|reply::|ResponseQueue|ResponseFrame|ClientOutbox|Reply::send|serialize_unsized|coraft_net::frame::encode|client_writer|write_frame'),
 ('apply (state machine, scratch)', r'coraft::runtime::apply::|Group::apply|on_apply|ApplyResults|counter::'),
 ('Raft core', r'coraft::raft::'),
 ('WAL encode/CRC/submit', r'coraft_wal::|storage::write_ready|storage::|crc32fast'),
 ('proposal queueing', r'Shard::queue_proposal|Shard::client_proposal|Shard::propose|events::|EventQueue|stamp_leader_time'),
 ('metrics/hdrhistogram', r'metrics::|hdrhistogram'),
 ('net reader/connection', r'coraft_net::|transport::'),
 ('io_uring_enter (reactor submit/sleep)', r'io_uring_enter|__sys_io_uring_enter|link_rings_and_sleep'),
 ('glommio reactor/executor', r'glommio::|scoped_tls|futures_lite|async_task'),
 ('shard turn (other)', r'coraft::runtime::shard::'),
 ('other coraft runtime', r'coraft::runtime::'),
 ('kernel (other)', r'\[kernel|^ffffffff'),
 ('clock_gettime', r'clock_gettime|Timespec::now|Instant::now'),
 ('memcpy/memmove', r'memmove|memcpy|memset'),
 ('bench client (harness)', r'coraft_bench::'),
]
RULES = [(c, re.compile(r)) for c, r in RULES]
def samples(path):
    comm=None; frames=[]
    for line in open(path, errors='replace'):
        if not line.strip():
            if comm is not None: yield comm, frames
            comm=None; frames=[]; continue
        if not line.startswith('\t') and not line.startswith(' '*8):
            comm=line.split()[0]; frames=[]; continue
        parts=line.strip().split(' ',1)
        if len(parts)<2: continue
        sym=parts[1].rsplit(' (',1)
        dso=sym[1] if len(sym)>1 else ''
        frames.append((sym[0], dso))
    if comm is not None: yield comm, frames
def classify(frames):
    for sym, dso in frames:
        for c, r in RULES:
            if r.search(sym): return c, sym
        if 'kernel.kallsyms' in dso: 
            continue
    # leaf is kernel with no match
    if frames and 'kallsyms' in frames[0][1]: return 'kernel (other)', frames[0][0]
    return 'other', frames[0][0] if frames else '?'
def main():
    path=sys.argv[1]; thread=sys.argv[2] if len(sys.argv)>2 else 'coraft-1-0'
    cnt=collections.Counter(); other=collections.Counter(); n=0
    bycat=collections.defaultdict(collections.Counter)
    for comm, frames in samples(path):
        if not comm.startswith(thread): continue
        n+=1; c, sym = classify(frames); cnt[c]+=1; bycat[c][frames[0][0][:90] if frames else '?']+=1
        if c=='other': other[sym[:100]]+=1
    print(f'{n} samples of threads {thread}*')
    W=int(sys.argv[sys.argv.index('--writes')+1]) if '--writes' in sys.argv else 0
    u=cnt['uprobe (measurement)']; print(f'writes {W}; executor thread CPU per write {n/1999/W*1e6:.3f} us, {(n-u)/1999/W*1e6:.3f} us without the probe' if W else '')
    for c,k in cnt.most_common(): print(f'{100*k/n:6.1f}%  {k:5d}  {c}' + (f'  {k/1999/W*1e9:7.0f} ns/write' if W else ''))
    if '-v' in sys.argv:
        for c,_ in cnt.most_common():
            print('==',c); [print(f'   {k:5d} {s}') for s,k in bycat[c].most_common(8)]

if __name__ == '__main__':
    main()
