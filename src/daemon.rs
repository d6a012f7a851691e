//! Detaching into the background as FUSE programs do: the launching process forks, waits until
//! the child reports that the mount is live (or why it failed), and exits with that outcome.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// How the serving process reports the mount's outcome.
pub enum Reporter {
    /// Foreground: nothing to tell anyone.
    Foreground,
    /// Background child: one line to the waiting parent.
    Child(Option<File>),
}

impl Reporter {
    /// The mount is live: tell the parent, then drop the terminal (stdio to /dev/null, log to
    /// syslog).
    pub fn ready(&mut self) {
        if let Reporter::Child(pipe) = self {
            if let Some(mut p) = pipe.take() {
                let _ = p.write_all(b"OK\n");
            }
            detach_stdio();
            crate::log::use_syslog("flufs");
        }
    }

    /// The mount failed: in the background child, tell the parent. Returns whether the message
    /// was delivered (otherwise the caller prints it).
    pub fn fail(&mut self, msg: &str) -> bool {
        if let Reporter::Child(pipe) = self
            && let Some(mut p) = pipe.take()
        {
            let line = msg.lines().next().unwrap_or("").trim();
            return p.write_all(format!("ERR {line}\n").as_bytes()).is_ok();
        }
        false
    }
}

fn detach_stdio() {
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
        libc::chdir(c"/".as_ptr());
    }
}

/// Fork. The parent waits for the child's report and exits; the child returns its reporter.
/// Must be called before any thread is started.
pub fn detach() -> Result<Reporter, String> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            unsafe { libc::setsid() };
            Ok(Reporter::Child(Some(File::from(wr))))
        }
        child => {
            drop(wr);
            let mut s = String::new();
            let _ = File::from(rd).read_to_string(&mut s);
            let line = s.lines().next().unwrap_or("");
            if line == "OK" {
                std::process::exit(0);
            }
            if let Some(msg) = line.strip_prefix("ERR ") {
                eprintln!("flufs: {msg}");
                std::process::exit(1);
            }
            let mut status = 0;
            unsafe { libc::waitpid(child, &mut status, 0) };
            eprintln!("flufs: the daemon exited before the mount was ready (wait status {status})");
            std::process::exit(1);
        }
    }
}
