//! Where the daemon's messages go: stderr while it runs in the foreground, syslog once it has
//! detached (stderr then points at /dev/null). One record per call, even for a multi-line
//! Lua traceback.

use std::ffi::CString;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static SYSLOG: AtomicBool = AtomicBool::new(false);

/// Send further messages to syslog (called after the daemon detaches).
pub fn use_syslog(ident: &str) {
    // openlog keeps the pointer: leak one small string for the life of the process.
    let ident = CString::new(ident).unwrap_or_default().into_raw();
    unsafe { libc::openlog(ident, libc::LOG_PID, libc::LOG_DAEMON) };
    SYSLOG.store(true, Ordering::SeqCst);
}

fn emit(priority: libc::c_int, msg: &str) {
    if SYSLOG.load(Ordering::Relaxed) {
        let text = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
    } else {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "flufs: {msg}");
    }
}

pub fn error(msg: &str) {
    emit(libc::LOG_ERR, msg);
}

pub fn info(msg: &str) {
    emit(libc::LOG_INFO, msg);
}

pub fn warn(msg: &str) {
    emit(libc::LOG_WARNING, &format!("warning: {msg}"));
}

/// A `-d` trace line: always stderr (tracing implies the foreground).
pub fn trace(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}
