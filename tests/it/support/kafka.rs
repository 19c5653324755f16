//! A real Kafka-protocol broker for one test: `nisshi` (Apache-Kafka compatible, from
//! crates.io; `scripts/setup.sh` installs it) on a free loopback port, started from a clean
//! temp folder, with in-memory storage or — for tests that stop and restart it — SQLite
//! storage that survives the restart. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Keep data across `stop`/`start`.
    durable: bool,
    child: Option<Child>,
}

impl Broker {
    /// An in-memory broker (the default for the production column).
    pub fn start() -> Broker {
        Self::launch(false)
    }

    /// A broker whose data and committed offsets survive `stop` + `start_again`.
    pub fn start_durable() -> Broker {
        Self::launch(true)
    }

    fn launch(durable: bool) -> Broker {
        let mut b = Broker {
            port: super::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            durable,
            child: None,
        };
        b.start_again();
        b
    }

    /// `kafka://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port and storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let bin = super::installed_binary("nisshi", "SUBSTRATE_TEST_NISSHI");
        assert!(
            bin.is_file(),
            "nisshi not found at {} (scripts/setup.sh installs it)",
            bin.display()
        );
        let storage = if self.durable {
            format!("sqlite:///{}/broker.db", self.dir.path().display())
        } else {
            "memory://nisshi/".to_string()
        };
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        let child = Command::new(&bin)
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                &storage,
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nisshi");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nisshi did not listen on {} within 30s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the broker (SIGSTOP): its connections stay open and nothing is answered, as
    /// with a broker stalled by a long GC pause or a saturated disk. `resume` thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} nisshi");
        }
    }

    /// Stops the broker and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
