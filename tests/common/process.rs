//! Running a program (QEMU) under a time limit and collecting its output: shared by the
//! tests that boot a kernel or a firmware.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a run ended.
pub struct Outcome {
    /// The exit status (`None` when killed).
    pub status: Option<i32>,
    /// The run took longer than the limit and was killed.
    pub timed_out: bool,
    /// Its stdout (without carriage returns), then its stderr, if any, after a separator.
    pub log: String,
    pub secs: f64,
}

/// Runs `cmd` with stdin closed and its output collected; kills it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the child") {
            break st;
        }
        if t0.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("waiting for the child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut log = String::from_utf8_lossy(&out_reader.join().unwrap()).replace('\r', "");
    let err = err_reader.join().unwrap();
    if !err.is_empty() {
        log.push_str(&format!("\n--- {name} stderr ---\n"));
        log.push_str(&String::from_utf8_lossy(&err));
    }
    Outcome {
        status: status.code(),
        timed_out,
        log,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Fails the test unless `program --version` runs: it says what the test needs the
/// program for (`why`) and the Debian package that installs it.
pub fn require(program: &str, why: &str, package: &str) {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => panic!(
            "{program} not found or not working: {why}. Install it with `apt-get install -y \
             --no-install-recommends {package}` (scripts/setup.sh does it)."
        ),
    }
}
