//! A private `redis-server` for tests: a free port on 127.0.0.1, no persistence,
//! killed on drop. Never the shared server on 6379.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

fn redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl TestRedis {
    /// `None` (with a notice) when `redis-server` is missing, unless `CI=true`,
    /// where a missing server is a failure.
    pub fn start() -> Option<TestRedis> {
        if redis_server().is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is not on PATH, and CI=true requires the Redis tests to run"
            );
            eprintln!("skipped: redis-server is not on PATH");
            return None;
        }
        // Another test may take the port between our look and the server's bind:
        // then try another.
        for _ in 0..5 {
            let mut server = TestRedis {
                port: free_port(),
                child: None,
            };
            if server.try_launch() {
                return Some(server);
            }
        }
        panic!("redis-server would not start on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts again on the same port, empty.
    pub fn launch(&mut self) {
        assert!(
            self.try_launch(),
            "redis-server did not start again on {}",
            self.port
        );
    }

    fn try_launch(&mut self) -> bool {
        let child = Command::new(redis_server().expect("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers_ping() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || start.elapsed() > Duration::from_secs(10) {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGSTOP (`stop: true`) or SIGCONT: a server that accepts but never answers.
    #[cfg(unix)]
    pub fn pause(&self, stop: bool) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signals our own child process, which we have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGKILL, like a crash: nothing is saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        client
            .get_connection_with_timeout(Duration::from_millis(500))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok_and(|pong| pong == "PONG")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
