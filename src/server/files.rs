//! The process's open-file limit, against the connections the config lets luka hold: the maximum in, the soft limit
//! raised to it (or a warning) out.
//!
//! Every client connection is a file descriptor, as is every broker connection, the listener and the log. Many
//! systems start a service with a soft limit of 1024 (systemd's default, most shells), the default
//! `max_connections`: at that limit accepting fails, and so do new broker connections, so a few clients holding
//! idle connections would make every produce fail. The hard limit is usually far higher, and raising the soft limit
//! up to it needs no privilege (Go's runtime does the same at start).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for what is not a client connection: the listener, the log, the runtime, broker connections.
const BESIDE_CONNECTIONS: u64 = 256;

/// Raises the soft open-file limit to the hard one when it is below what `max_connections` needs; warns when even
/// the hard limit is.
pub fn make_room(max_connections: usize) {
    let wanted = max_connections as u64 + BESIDE_CONNECTIONS;
    let limit = getrlimit(Resource::Nofile);
    let Some(raised) = raised(&limit, wanted) else {
        return;
    };
    // The hard limit can be above what the kernel lets a process have (`fs.nr_open`), and Linux refuses any setting
    // then: what is needed, for both, at least.
    let set = setrlimit(Resource::Nofile, raised).or_else(|_| {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: Some(wanted),
            },
        )
    });
    let now = if set.is_ok() {
        getrlimit(Resource::Nofile)
    } else {
        limit
    };
    if let Some(soft) = now.current.filter(|soft| *soft < wanted) {
        tracing::warn!(
            open_files = soft,
            needed = wanted,
            "the open-file limit is below [server] max_connections and {BESIDE_CONNECTIONS} more for brokers and \
             the rest: past it new connections, to clients and to brokers, fail; raise the limit (ulimit -n, \
             LimitNOFILE=) or lower max_connections"
        );
    }
}

/// The limit to set, if the soft one is below `wanted`: the soft limit at the hard one (or at `wanted`, when the
/// hard limit is none).
fn raised(limit: &Rlimit, wanted: u64) -> Option<Rlimit> {
    let soft = limit.current?;
    (soft < wanted).then(|| Rlimit {
        current: Some(limit.maximum.unwrap_or(wanted).max(soft)),
        maximum: limit.maximum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(current: Option<u64>, maximum: Option<u64>) -> Rlimit {
        Rlimit { current, maximum }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_only_when_short() {
        let to = |l: Option<Rlimit>| l.map(|l| (l.current, l.maximum));
        assert_eq!(
            to(raised(&limit(Some(1024), Some(524_288)), 1280)),
            Some((Some(524_288), Some(524_288)))
        );
        assert_eq!(to(raised(&limit(Some(1024), None), 1280)), Some((Some(1280), None)));
        assert_eq!(to(raised(&limit(Some(4096), Some(524_288)), 1280)), None);
        assert_eq!(
            to(raised(&limit(None, None), 1280)),
            None,
            "no soft limit: nothing to raise"
        );
        // A hard limit below what is wanted is still the most there is.
        assert_eq!(
            to(raised(&limit(Some(512), Some(1024)), 1280)),
            Some((Some(1024), Some(1024)))
        );
    }
}
