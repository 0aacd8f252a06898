//! Where the database is: libpq `key=value` strings and `postgres://`
//! URLs (the client library parses both), shown in messages with the
//! password left out.

use super::PgError;
use ::postgres::config::Host;
use ::postgres::{Client, Config, NoTls};
use std::time::Duration;

/// How long a connection attempt may take before it fails, unless the
/// target sets `connect_timeout` itself: an unreachable host is an error,
/// not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// This process as the database knows it: its connections' application
/// name (what `pg_stat_activity` shows) and the worker its outcomes are
/// credited to.
pub fn process_name() -> String {
    format!("archgram {}", std::process::id())
}

/// A parsed connection target.
#[derive(Clone, Debug)]
pub struct Target {
    config: Config,
    /// Whether it was given as a URL (and is shown as one).
    url: bool,
}

/// The same place: server, user and database as given (the password
/// aside).
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.redacted() == other.redacted()
    }
}

impl Target {
    /// Reads `key=value` pairs or a `postgres://` (`postgresql://`) URL.
    pub fn parse(s: &str) -> Result<Target, PgError> {
        let mut config: Config = s.parse().map_err(PgError::BadTarget)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            // What `pg_stat_activity` shows, and so a refused second
            // coordinator's message.
            config.application_name(&process_name());
        }
        let s = s.trim_start();
        let url = s.starts_with("postgres://") || s.starts_with("postgresql://");
        Ok(Target { config, url })
    }

    /// The same server with another database.
    pub fn with_dbname(&self, dbname: &str) -> Target {
        let mut t = self.clone();
        t.config.dbname(dbname);
        t
    }

    /// The target for messages and logs: user, hosts, ports and database,
    /// in the form it was given, rebuilt from the parsed fields so that
    /// nothing else of the original text (a password above all) can show.
    pub fn redacted(&self) -> String {
        let c = &self.config;
        let ports = c.get_ports();
        // libpq: one port for all hosts, or one per host.
        let port = |i: usize| ports.get(i).or(ports.first()).copied();
        let hosts: Vec<(String, bool)> = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => (name.clone(), false),
                Host::Unix(path) => (path.display().to_string(), true),
            })
            .collect();
        if self.url {
            let mut out = String::from("postgres://");
            if let Some(user) = c.get_user() {
                out.push_str(&url_escape(user));
                out.push('@');
            }
            let list: Vec<String> = hosts
                .iter()
                .enumerate()
                .map(|(i, (h, unix))| {
                    let h = if *unix { url_escape(h) } else { h.clone() };
                    match port(i) {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    }
                })
                .collect();
            out.push_str(&list.join(","));
            if let Some(db) = c.get_dbname() {
                out.push('/');
                out.push_str(&url_escape(db));
            }
            out
        } else {
            let mut parts = Vec::new();
            if !hosts.is_empty() {
                let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
                parts.push(format!("host={}", quote(&names.join(","))));
            }
            if !ports.is_empty() {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                parts.push(format!("port={}", list.join(",")));
            }
            if let Some(user) = c.get_user() {
                parts.push(format!("user={}", quote(user)));
            }
            if let Some(db) = c.get_dbname() {
                parts.push(format!("dbname={}", quote(db)));
            }
            if parts.is_empty() {
                "(the libpq defaults)".to_string()
            } else {
                parts.join(" ")
            }
        }
    }

    /// Opens a connection (without TLS).
    pub fn connect(&self) -> Result<Client, PgError> {
        self.config
            .connect(NoTls)
            .map_err(|source| PgError::Connect {
                target: self.redacted(),
                source,
            })
    }
}

/// A libpq value, quoted when it holds a space, a quote or nothing.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes what a URL's user, host or path part cannot hold.
fn url_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of an error and all its causes.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let t = Target::parse("postgres://alice:s3cret-pw@db1.example:5433/runs").unwrap();
        assert_eq!(t.redacted(), "postgres://alice@db1.example:5433/runs");
        let t = Target::parse("postgresql://bob:pw%20x@h1:1,h2:2/d?password=other-secret").unwrap();
        let shown = t.redacted();
        assert_eq!(shown, "postgres://bob@h1:1,h2:2/d");
        assert!(!format!("{t:?}").contains("other-secret"));
    }

    #[test]
    fn key_value_pairs_are_shown_without_the_password() {
        let t =
            Target::parse("host=db1 port=5433 user=alice password=s3cret-pw dbname=runs").unwrap();
        assert_eq!(t.redacted(), "host=db1 port=5433 user=alice dbname=runs");
        let t = Target::parse(r"password='it\'s a secret' host=/run/pg user='a b'").unwrap();
        let shown = t.redacted();
        assert_eq!(shown, r"host=/run/pg user='a b'");
        assert!(!shown.contains("secret") && !format!("{t:?}").contains("secret"));
    }

    #[test]
    fn an_unreadable_target_is_a_typed_error_without_the_password() {
        let e = Target::parse("host=db1 password=s3cret-pw port=notaport").unwrap_err();
        assert!(matches!(e, PgError::BadTarget(_)), "{e:?}");
        let text = chain(&e);
        assert!(text.contains("port"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn a_failed_connection_names_the_target_keeps_the_cause_and_hides_the_password() {
        // Port 1 on the loopback: nothing listens there, so the attempt is
        // refused at once.
        let t = Target::parse("postgres://alice:s3cret-pw@127.0.0.1:1/runs").unwrap();
        let Err(e) = t.connect() else {
            panic!("something listens on 127.0.0.1:1");
        };
        let PgError::Connect { target, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(target, "postgres://alice@127.0.0.1:1/runs");
        assert!(std::error::Error::source(&e).is_some());
        let text = chain(&e);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    }
}
