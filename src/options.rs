//! Mount options (`-o opt[,opt...]` and the `-f`/`-d`/`-s` flags), parsed from the command line
//! or from the `argv` a Flu-style script hands to `flu.main`, and merged (command line wins).

use std::time::Duration;

/// Everything `-o` and the flags can set. `None`/`false` means "not given".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountOptions {
    pub foreground: bool,
    pub debug: bool,
    pub single_thread: bool,
    pub ro: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub auto_unmount: bool,
    pub use_ino: bool,
    pub direct_io: bool,
    pub kernel_cache: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    pub attr_timeout: Option<f64>,
    pub entry_timeout: Option<f64>,
    pub negative_timeout: Option<f64>,
    pub max_read: Option<u32>,
    pub max_write: Option<u32>,
    pub threads: Option<usize>,
    pub writeback_cache: bool,
    /// `--op-timeout`: longest a request's Lua code may run.
    pub op_timeout: Option<Duration>,
    /// `--lua-memory`: limit of the Lua state in bytes.
    pub lua_memory: Option<u64>,
    /// Kernel mount flags passed through (`nosuid`, `noexec`, ...).
    pub kernel_flags: Vec<String>,
}

/// Kernel mount flags accepted as-is.
const KERNEL_FLAGS: &[&str] = &[
    "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "sync", "async",
    "dirsync",
];

/// libfuse options that are accepted for compatibility and have no effect here.
const IGNORED: &[&str] = &[
    "big_writes",
    "large_read",
    "hard_remove",
    "nonempty",
    "noforget",
];

fn seconds(name: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "option '{name}={v}' needs a number of seconds (e.g. {name}=1.5)"
        )),
    }
}

fn count(name: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("option '{name}={v}' needs a positive integer"))
}

impl MountOptions {
    /// Apply one comma-separated `-o` argument.
    pub fn add_o(&mut self, list: &str) -> Result<(), String> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            self.add_one(opt)?;
        }
        Ok(())
    }

    fn add_one(&mut self, opt: &str) -> Result<(), String> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        fn need<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, String> {
            v.ok_or_else(|| format!("option '{name}' needs a value ({name}=...)"))
        }
        match name {
            "ro" => self.ro = true,
            "rw" => self.ro = false,
            "allow_other" => self.allow_other = true,
            "allow_root" => self.allow_root = true,
            "default_permissions" => self.default_permissions = true,
            "auto_unmount" => self.auto_unmount = true,
            "use_ino" => self.use_ino = true,
            "direct_io" => self.direct_io = true,
            "kernel_cache" => self.kernel_cache = true,
            "writeback_cache" => self.writeback_cache = true,
            "fsname" => self.fsname = Some(need(name, value)?.to_string()),
            "subtype" => self.subtype = Some(need(name, value)?.to_string()),
            "attr_timeout" => self.attr_timeout = Some(seconds(name, need(name, value)?)?),
            "entry_timeout" => self.entry_timeout = Some(seconds(name, need(name, value)?)?),
            "negative_timeout" => self.negative_timeout = Some(seconds(name, need(name, value)?)?),
            "max_read" => self.max_read = Some(count(name, need(name, value)?)?),
            "max_write" => self.max_write = Some(count(name, need(name, value)?)?),
            "threads" => {
                let n = count(name, need(name, value)?)?;
                if n == 0 {
                    return Err("option 'threads' must be at least 1".into());
                }
                self.threads = Some(n as usize);
            }
            n if KERNEL_FLAGS.contains(&n) && value.is_none() => {
                self.kernel_flags.push(n.to_string())
            }
            n if IGNORED.contains(&n) => {}
            _ => {
                return Err(format!(
                    "unknown mount option '{opt}' (see 'flufs --help' for the supported -o options)"
                ));
            }
        }
        Ok(())
    }

    /// Parse FUSE-style arguments (`-f`, `-d`, `-s`, `-o a,b`, `-oa,b`); returns the options and
    /// the positional arguments left over (such as a mountpoint).
    pub fn parse_args(args: &[String]) -> Result<(MountOptions, Vec<String>), String> {
        let mut o = MountOptions::default();
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-f" => o.foreground = true,
                "-d" | "--debug" | "-odebug" => {
                    o.debug = true;
                    o.foreground = true;
                }
                "-s" => o.single_thread = true,
                "-o" => {
                    let v = it.next().ok_or("option '-o' needs a value")?;
                    o.add_o(v)?;
                }
                s if s.starts_with("-o") => o.add_o(&s[2..])?,
                s if s.starts_with('-') && s.len() > 1 => {
                    return Err(format!("unknown option '{s}'"));
                }
                s => rest.push(s.to_string()),
            }
        }
        Ok((o, rest))
    }

    /// Combine options from a script's argv (`self`) with the command line (`cli`), which wins.
    pub fn merged_under(&self, cli: &MountOptions) -> MountOptions {
        let mut m = self.clone();
        macro_rules! or_flag {
            ($($f:ident),*) => { $( m.$f = m.$f || cli.$f; )* };
        }
        or_flag!(
            foreground,
            debug,
            single_thread,
            ro,
            allow_other,
            allow_root,
            default_permissions,
            auto_unmount,
            use_ino,
            direct_io,
            kernel_cache,
            writeback_cache
        );
        macro_rules! cli_wins {
            ($($f:ident),*) => { $( if cli.$f.is_some() { m.$f = cli.$f.clone(); } )* };
        }
        cli_wins!(
            lua_memory,
            op_timeout,
            fsname,
            subtype,
            attr_timeout,
            entry_timeout,
            negative_timeout,
            max_read,
            max_write,
            threads
        );
        for f in &cli.kernel_flags {
            if !m.kernel_flags.contains(f) {
                m.kernel_flags.push(f.clone());
            }
        }
        m
    }

    pub fn attr_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.attr_timeout.unwrap_or(1.0))
    }

    pub fn entry_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.entry_timeout.unwrap_or(1.0))
    }

    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.negative_timeout.unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn all_documented_options_parse() {
        let mut o = MountOptions::default();
        o.add_o(
            "ro,allow_other,allow_root,default_permissions,fsname=x,subtype=y,auto_unmount,\
             use_ino,attr_timeout=2.5,entry_timeout=0,negative_timeout=1,direct_io,kernel_cache,\
             max_read=65536,nosuid",
        )
        .unwrap();
        assert!(o.ro && o.allow_other && o.allow_root && o.default_permissions);
        assert!(o.auto_unmount && o.use_ino && o.direct_io && o.kernel_cache);
        assert_eq!(o.fsname.as_deref(), Some("x"));
        assert_eq!(o.subtype.as_deref(), Some("y"));
        assert_eq!(o.attr_timeout, Some(2.5));
        assert_eq!(o.entry_ttl(), Duration::ZERO);
        assert_eq!(o.max_read, Some(65536));
        assert_eq!(o.kernel_flags, ["nosuid"]);
    }

    #[test]
    fn unknown_and_malformed_options_are_named() {
        let mut o = MountOptions::default();
        let e = o.add_o("ro,bogus_opt").unwrap_err();
        assert!(e.contains("bogus_opt"), "{e}");
        assert!(
            o.add_o("attr_timeout=soon")
                .unwrap_err()
                .contains("attr_timeout")
        );
        assert!(o.add_o("fsname").unwrap_err().contains("fsname"));
        assert!(o.add_o("max_read=-1").is_err());
    }

    #[test]
    fn flu_style_argv() {
        let (o, rest) =
            MountOptions::parse_args(&args(&["/mnt", "-f", "-oro", "-o", "fsname=a", "-s"]))
                .unwrap();
        assert_eq!(rest, ["/mnt"]);
        assert!(o.foreground && o.ro && o.single_thread);
        assert_eq!(o.fsname.as_deref(), Some("a"));
        let (o, _) = MountOptions::parse_args(&args(&["-d"])).unwrap();
        assert!(o.debug && o.foreground, "-d implies -f");
        assert!(MountOptions::parse_args(&args(&["-x"])).is_err());
    }

    #[test]
    fn command_line_wins() {
        let (script, _) =
            MountOptions::parse_args(&args(&["-o", "fsname=script,attr_timeout=5,ro"])).unwrap();
        let (cli, _) = MountOptions::parse_args(&args(&["-o", "fsname=cli", "-f"])).unwrap();
        let m = script.merged_under(&cli);
        assert_eq!(m.fsname.as_deref(), Some("cli"));
        assert_eq!(m.attr_timeout, Some(5.0));
        assert!(m.ro && m.foreground);
    }
}
