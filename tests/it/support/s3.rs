//! A real S3 server for one test: `s3s-fs` (which checks SigV4 signatures and presigned URLs
//! for real) on a free port over a temp folder, with one bucket. Killed when dropped. The
//! binary is `s3s-fs` on PATH or in ~/.cargo/bin (`scripts/setup.sh` installs it), or
//! `SUBSTRATE_TEST_S3S_FS`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use substrate::config::{Config, Secret};

pub const ACCESS_KEY: &str = "substrate-test-access";
pub const SECRET_KEY: &str = "substrate-test-secret-key-0123456789";
pub const BUCKET: &str = "media";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn spawn(bin: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "s3s-fs ({}) is required for the S3 tests (scripts/setup.sh installs it): {e}",
                bin.display()
            )
        })
}

/// Waits until `child` accepts connections on `port`; false if it exited or timed out.
async fn ready(child: &mut Child, port: u16) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(BUCKET)).expect("bucket dir");
        let bin = super::installed_binary("s3s-fs", "SUBSTRATE_TEST_S3S_FS");
        // A port picked here may be taken before s3s-fs binds it; then try another.
        for _ in 0..5 {
            let port = super::free_port();
            let mut child = spawn(&bin, port, dir.path());
            if ready(&mut child, port).await {
                return S3Server {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!("s3s-fs did not start");
    }

    /// Stops the server (an outage); `restart` brings it back on the same port and data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let mut child = spawn(
            &super::installed_binary("s3s-fs", "SUBSTRATE_TEST_S3S_FS"),
            self.port,
            self.dir.path(),
        );
        assert!(ready(&mut child, self.port).await, "s3s-fs did not restart");
        self.child = Some(child);
    }

    /// Points `cfg`'s object storage at this server's bucket.
    pub fn configure(&self, cfg: &mut Config) {
        cfg.objects.url = format!("s3://{BUCKET}");
        cfg.objects.endpoint = Some(self.endpoint.clone());
        cfg.objects.region = "us-east-1".into();
        cfg.objects.access_key_id = Some(Secret::new(ACCESS_KEY));
        cfg.objects.secret_access_key = Some(Secret::new(SECRET_KEY));
    }

    /// The same settings as environment variables, for a spawned substrate process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SUBSTRATE_OBJECTS__URL".into(), format!("s3://{BUCKET}")),
            ("SUBSTRATE_OBJECTS__ENDPOINT".into(), self.endpoint.clone()),
            ("SUBSTRATE_OBJECTS__REGION".into(), "us-east-1".into()),
            ("SUBSTRATE_OBJECTS__ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            (
                "SUBSTRATE_OBJECTS__SECRET_ACCESS_KEY".into(),
                SECRET_KEY.into(),
            ),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
