//! Value parsers shared by the options of every subcommand: each one names
//! what it accepts, so clap's refusal reads "invalid value '0' for
//! '--clients <N>': must be at least 1".

/// The largest `--payload` the harness sends (64 KiB).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// The smallest `--wal-segment-bytes`: room for one record of the WAL's
/// largest (4 MiB) after the segment's header.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 8 << 20;

/// A whole number of at least 1.
pub fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) => Ok(value),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

/// Like [`at_least_one`], as a `u64`.
pub fn at_least_one_u64(raw: &str) -> Result<u64, String> {
    at_least_one(raw).map(|value| value as u64)
}

/// A whole number of seconds, at least 1.
pub fn seconds_at_least_one(raw: &str) -> Result<u64, String> {
    at_least_one_u64(raw).map_err(|_| "expected a whole number of seconds, at least 1".into())
}

/// A whole number of seconds, 0 or more.
pub fn seconds(raw: &str) -> Result<u64, String> {
    raw.parse::<u64>()
        .map_err(|_| "expected a whole number of seconds (0 or more)".into())
}

/// Seconds as a decimal number above 0.
pub fn positive_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err("expected a number of seconds above 0, e.g. 0.5 or 3".into()),
    }
}

/// The size of a cluster: an odd number of nodes.
pub fn odd_nodes(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(nodes) if nodes % 2 == 1 => Ok(nodes),
        Ok(nodes) => Err(format!(
            "a Raft cluster here has an odd number of nodes (1, 3, 5, ...), not {nodes}"
        )),
        Err(_) => Err("expected an odd whole number of nodes (1, 3, 5, ...)".into()),
    }
}

/// Payload bytes, 0 to [`PAYLOAD_BYTES_MAX`].
pub fn payload_bytes(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(bytes) if bytes <= PAYLOAD_BYTES_MAX => Ok(bytes),
        Ok(bytes) => Err(format!("at most {PAYLOAD_BYTES_MAX} bytes (64 KiB), not {bytes}")),
        Err(_) => Err(format!("expected a number of bytes from 0 to {PAYLOAD_BYTES_MAX}")),
    }
}

/// A fraction from 0 to 1.
pub fn fraction(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err("expected a fraction from 0 to 1, e.g. 0.9".into()),
    }
}

/// WAL segment bytes (`--wal-segment-bytes`): a multiple of 4096 from
/// [`WAL_SEGMENT_BYTES_MIN`] to the node config's limit (1 GiB).
pub fn wal_segment_bytes(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if n >= WAL_SEGMENT_BYTES_MIN && n % 4096 == 0 && n <= coraft_tuning::limits::SEGMENT_BYTES_LIMIT => {
            Ok(n)
        }
        _ => Err(format!(
            "expected bytes, a multiple of 4096 from {WAL_SEGMENT_BYTES_MIN} (8 MiB) to {} (1 GiB)",
            coraft_tuning::limits::SEGMENT_BYTES_LIMIT
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_refuse_what_they_do_not_accept() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("x").is_err());
        assert_eq!(odd_nodes("5"), Ok(5));
        assert!(odd_nodes("4").unwrap_err().contains("odd"));
        assert_eq!(payload_bytes("65536"), Ok(65536));
        assert!(payload_bytes("65537").unwrap_err().contains("64 KiB"));
        assert_eq!(fraction("0.9"), Ok(0.9));
        assert!(fraction("1.5").is_err());
        assert!(positive_seconds("0").is_err());
        assert_eq!(seconds("0"), Ok(0));
        assert_eq!(wal_segment_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(wal_segment_bytes("8388608"), Ok(8 << 20));
        assert!(wal_segment_bytes("8388607").is_err());
        assert!(wal_segment_bytes("8392705").unwrap_err().contains("multiple of 4096"));
        assert!(wal_segment_bytes("2147483648").is_err());
    }
}
