//! Errno names and values: the table behind `flu.errno`, `strerror` text, and the rules that turn
//! whatever a script raised (`flu.errno.X`, `"ENOENT"`, `2`) into the errno sent to the kernel.

/// Every Linux errno name with its value (x86_64 / generic), aliases included.
pub const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("ESRCH", 3),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("E2BIG", 7),
    ("ENOEXEC", 8),
    ("EBADF", 9),
    ("ECHILD", 10),
    ("EAGAIN", 11),
    ("EWOULDBLOCK", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("ENOTBLK", 15),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("EXDEV", 18),
    ("ENODEV", 19),
    ("ENOTDIR", 20),
    ("EISDIR", 21),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("ENOTTY", 25),
    ("ETXTBSY", 26),
    ("EFBIG", 27),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("EMLINK", 31),
    ("EPIPE", 32),
    ("EDOM", 33),
    ("ERANGE", 34),
    ("EDEADLK", 35),
    ("EDEADLOCK", 35),
    ("ENAMETOOLONG", 36),
    ("ENOLCK", 37),
    ("ENOSYS", 38),
    ("ENOTEMPTY", 39),
    ("ELOOP", 40),
    ("ENOMSG", 42),
    ("EIDRM", 43),
    ("ECHRNG", 44),
    ("EL2NSYNC", 45),
    ("EL3HLT", 46),
    ("EL3RST", 47),
    ("ELNRNG", 48),
    ("EUNATCH", 49),
    ("ENOCSI", 50),
    ("EL2HLT", 51),
    ("EBADE", 52),
    ("EBADR", 53),
    ("EXFULL", 54),
    ("ENOANO", 55),
    ("EBADRQC", 56),
    ("EBADSLT", 57),
    ("EBFONT", 59),
    ("ENOSTR", 60),
    ("ENODATA", 61),
    ("ENOATTR", 61),
    ("ETIME", 62),
    ("ENOSR", 63),
    ("ENONET", 64),
    ("ENOPKG", 65),
    ("EREMOTE", 66),
    ("ENOLINK", 67),
    ("EADV", 68),
    ("ESRMNT", 69),
    ("ECOMM", 70),
    ("EPROTO", 71),
    ("EMULTIHOP", 72),
    ("EDOTDOT", 73),
    ("EBADMSG", 74),
    ("EOVERFLOW", 75),
    ("ENOTUNIQ", 76),
    ("EBADFD", 77),
    ("EREMCHG", 78),
    ("ELIBACC", 79),
    ("ELIBBAD", 80),
    ("ELIBSCN", 81),
    ("ELIBMAX", 82),
    ("ELIBEXEC", 83),
    ("EILSEQ", 84),
    ("ERESTART", 85),
    ("ESTRPIPE", 86),
    ("EUSERS", 87),
    ("ENOTSOCK", 88),
    ("EDESTADDRREQ", 89),
    ("EMSGSIZE", 90),
    ("EPROTOTYPE", 91),
    ("ENOPROTOOPT", 92),
    ("EPROTONOSUPPORT", 93),
    ("ESOCKTNOSUPPORT", 94),
    ("EOPNOTSUPP", 95),
    ("ENOTSUP", 95),
    ("EPFNOSUPPORT", 96),
    ("EAFNOSUPPORT", 97),
    ("EADDRINUSE", 98),
    ("EADDRNOTAVAIL", 99),
    ("ENETDOWN", 100),
    ("ENETUNREACH", 101),
    ("ENETRESET", 102),
    ("ECONNABORTED", 103),
    ("ECONNRESET", 104),
    ("ENOBUFS", 105),
    ("EISCONN", 106),
    ("ENOTCONN", 107),
    ("ESHUTDOWN", 108),
    ("ETOOMANYREFS", 109),
    ("ETIMEDOUT", 110),
    ("ECONNREFUSED", 111),
    ("EHOSTDOWN", 112),
    ("EHOSTUNREACH", 113),
    ("EALREADY", 114),
    ("EINPROGRESS", 115),
    ("ESTALE", 116),
    ("EUCLEAN", 117),
    ("ENOTNAM", 118),
    ("ENAVAIL", 119),
    ("EISNAM", 120),
    ("EREMOTEIO", 121),
    ("EDQUOT", 122),
    ("ENOMEDIUM", 123),
    ("EMEDIUMTYPE", 124),
    ("ECANCELED", 125),
    ("ENOKEY", 126),
    ("EKEYEXPIRED", 127),
    ("EKEYREVOKED", 128),
    ("EKEYREJECTED", 129),
    ("EOWNERDEAD", 130),
    ("ENOTRECOVERABLE", 131),
    ("ERFKILL", 132),
    ("EHWPOISON", 133),
];

/// Largest errno value the kernel accepts in a reply.
pub const MAX_ERRNO: i64 = 4095;

/// The value of an errno name such as `"ENOENT"`.
pub fn by_name(name: &str) -> Option<i32> {
    ERRNOS.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// The canonical (first listed) name of an errno value.
pub fn name_of(code: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|&&(_, v)| v == code).map(|&(n, _)| n)
}

/// `strerror` text, without Rust's " (os error N)" suffix.
pub fn strerror(code: i32) -> String {
    let s = std::io::Error::from_raw_os_error(code).to_string();
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Interpret an error string raised by a script: `"ENOENT"`, or the same with the position
/// prefix `error()` adds (`"script.lua:12: ENOENT"`).
pub fn from_message(msg: &str) -> Option<i32> {
    let tail = msg.rsplit(": ").next().unwrap_or(msg).trim();
    by_name(tail)
}

/// Interpret an integer raised by a script (`error(2)`): a positive errno in range.
pub fn from_integer(n: i64) -> Option<i32> {
    if (1..=MAX_ERRNO).contains(&n) {
        i32::try_from(n).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_libc_values() {
        assert_eq!(by_name("ENOENT"), Some(libc::ENOENT));
        assert_eq!(by_name("ENOTEMPTY"), Some(libc::ENOTEMPTY));
        assert_eq!(by_name("ENAMETOOLONG"), Some(libc::ENAMETOOLONG));
        assert_eq!(by_name("ELOOP"), Some(libc::ELOOP));
        assert_eq!(by_name("EOPNOTSUPP"), Some(libc::EOPNOTSUPP));
        assert_eq!(by_name("ETIMEDOUT"), Some(libc::ETIMEDOUT));
        assert_eq!(by_name("EHWPOISON"), Some(libc::EHWPOISON));
        assert_eq!(by_name("ENOATTR"), Some(libc::ENODATA));
        assert_eq!(by_name("nope"), None);
    }

    #[test]
    fn canonical_name_is_first_listed() {
        assert_eq!(name_of(61), Some("ENODATA"));
        assert_eq!(name_of(11), Some("EAGAIN"));
    }

    #[test]
    fn strerror_has_no_rust_suffix() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
    }

    #[test]
    fn messages_with_position_prefix() {
        assert_eq!(from_message("ENOENT"), Some(2));
        assert_eq!(from_message("x.lua:3: EACCES"), Some(13));
        assert_eq!(from_message("x.lua:3: attempt to index nil"), None);
    }

    #[test]
    fn integers_in_range_only() {
        assert_eq!(from_integer(2), Some(2));
        assert_eq!(from_integer(0), None);
        assert_eq!(from_integer(-2), None);
        assert_eq!(from_integer(5000), None);
    }
}
