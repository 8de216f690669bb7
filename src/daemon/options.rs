//! The value parsers of `vxmesh run`'s options that are more than a number (clap calls them;
//! each error says what was expected, and clap exits 2 with it).
//!
//! Where it sits: the command line, before the node starts; nothing here runs per packet.

/// `--busy-poll-us`: microseconds (at most an hour), or "max" for never sleeping.
pub fn parse_busy_poll(s: &str) -> Result<std::time::Duration, String> {
    if s == "max" {
        return Ok(std::time::Duration::MAX);
    }
    match s.parse::<u64>() {
        Ok(us) if us <= 3_600_000_000 => Ok(std::time::Duration::from_micros(us)),
        _ => Err(format!(
            "expected microseconds (0 to 3600000000) or \"max\", got {s:?}"
        )),
    }
}

/// The longest connection timeout `--lb-timeouts` takes: a week.
pub const MAX_LB_TIMEOUT: u32 = 7 * 24 * 3600;

/// `--lb-timeouts TCP,TCPFIN,UDP`: three numbers of seconds, 0 keeping IPVS's default.
pub fn parse_lb_timeouts(s: &str) -> Result<lb::Timeouts, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || {
        format!(
            "expected TCP,TCPFIN,UDP: three timeouts in seconds (0 to {MAX_LB_TIMEOUT}, 0 keeps the default), got {s:?}"
        )
    };
    let [tcp, fin, udp] = parts.as_slice() else {
        return Err(bad());
    };
    let secs = |v: &str| match v.parse::<u32>() {
        Ok(n) if n <= MAX_LB_TIMEOUT => Ok(n),
        _ => Err(bad()),
    };
    let mut t = lb::Timeouts::default();
    t.set(secs(tcp)?, secs(fin)?, secs(udp)?);
    Ok(t)
}

/// `--max-conns`: 1024 to 16777216 entries (2 GB of table at the top).
pub fn parse_max_conns(s: &str) -> Result<usize, String> {
    const RANGE: std::ops::RangeInclusive<usize> = 1024..=(1 << 24);
    match s.parse::<usize>() {
        Ok(n) if RANGE.contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of connections from {} to {}, got {s:?}",
            RANGE.start(),
            RANGE.end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lb_timeouts_are_ipvsadms_three_and_zero_keeps_a_default() {
        let t = parse_lb_timeouts("0, 60,42").unwrap();
        let d = lb::Timeouts::default();
        assert_eq!(t.udp, 42);
        assert_eq!(t.tcp_state(lb::state::TcpState::FinWait), 60, "TCPFIN");
        assert_eq!(
            t.tcp_state(lb::state::TcpState::Established),
            d.tcp_state(lb::state::TcpState::Established)
        );
        for bad in ["", "1,2", "1,2,3,4", "a,b,c", "-1,0,0", "604801,0,0"] {
            assert!(parse_lb_timeouts(bad).is_err(), "{bad:?}");
        }
        assert!(parse_lb_timeouts("604800,0,0").is_ok());
    }

    #[test]
    fn busy_poll_and_max_conns() {
        assert_eq!(parse_busy_poll("max"), Ok(std::time::Duration::MAX));
        assert_eq!(
            parse_busy_poll("250"),
            Ok(std::time::Duration::from_micros(250))
        );
        assert!(parse_busy_poll("3600000001").is_err());
        assert_eq!(parse_max_conns("1024"), Ok(1024));
        assert!(parse_max_conns("1023").is_err() && parse_max_conns("16777217").is_err());
    }
}
