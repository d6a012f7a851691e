//! The command line: `flufs [OPTIONS] SCRIPT MOUNTPOINT [-- SCRIPT_ARGS...]`, parsed with clap
//! and checked before anything is mounted.

use std::path::PathBuf;

use clap::Parser;

use crate::options::MountOptions;

const OPTIONS_HELP: &str = "\
Mount options (-o opt[,opt...]):
  ro                     read-only mount
  allow_other            let all users access the mount
  allow_root             let root access the mount
  default_permissions    let the kernel check permissions from the modes
  fsname=NAME            source name shown in /proc/mounts (default: script name)
  subtype=TYPE           type shown as fuse.TYPE (default: flufs)
  auto_unmount           unmount when the daemon dies, even by kill -9
  use_ino                accepted for compatibility (inode numbers come from 'ino')
  attr_timeout=SECS      how long the kernel caches attributes (default 1)
  entry_timeout=SECS     how long the kernel caches names (default 1)
  negative_timeout=SECS  how long the kernel caches missing names (default 0)
  direct_io              bypass the page cache for every open file
  kernel_cache           keep the page cache between opens
  max_read=BYTES         largest read request
  max_write=BYTES        largest write request (default 1 MiB)
  writeback_cache        let the kernel cache writes
  threads=N              kernel threads reading requests (default 2; all but one read only
                         while requests keep coming)
  nosuid,nodev,noexec,noatime,... are passed to the kernel.";

#[derive(Parser, Debug)]
#[command(
    name = "flufs",
    version,
    about = "Mount a FUSE filesystem written in Lua",
    after_help = OPTIONS_HELP
)]
pub struct Cli {
    /// Stay in the foreground
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Trace every request to stderr (implies -f)
    #[arg(short = 'd')]
    pub debug: bool,
    /// Accepted for compatibility with FUSE programs
    #[arg(short = 's')]
    pub single: bool,
    /// Mount options, comma separated (see below)
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    pub options: Vec<String>,
    /// Interrupt a request whose Lua code runs longer than this many seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Memory limit of the Lua state in MiB; allocations past it fail with ENOMEM
    /// (default: half of the machine's RAM; 0 = unlimited)
    #[arg(long, value_name = "MIB")]
    pub lua_memory: Option<u64>,
    /// The Lua script defining the filesystem
    pub script: PathBuf,
    /// Where to mount it
    pub mountpoint: PathBuf,
    /// Arguments passed to the script after MOUNTPOINT (in `...` and `arg`)
    #[arg(last = true)]
    pub script_args: Vec<String>,
}

impl Cli {
    /// The mount options given on the command line.
    pub fn mount_options(&self) -> Result<MountOptions, String> {
        if !self.op_timeout.is_finite() || self.op_timeout < 0.0 {
            return Err(format!(
                "--op-timeout {} must be a number of seconds >= 0",
                self.op_timeout
            ));
        }
        let mut o = MountOptions {
            op_timeout: (self.op_timeout > 0.0)
                .then(|| std::time::Duration::from_secs_f64(self.op_timeout)),
            foreground: self.foreground || self.debug,
            debug: self.debug,
            single_thread: self.single,
            ..MountOptions::default()
        };
        o.lua_memory = match self.lua_memory {
            Some(0) => None,
            Some(mib) => Some(mib.saturating_mul(1 << 20)),
            None => half_of_ram(),
        };
        for list in &self.options {
            o.add_o(list)?;
        }
        Ok(o)
    }
}

/// Parse the process arguments; on a usage error print one line and exit 2.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(0);
            }
            // clap's message runs over several lines before the usage; make it one.
            let text = e.to_string();
            let first = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            eprintln!(
                "flufs: {first} (usage: flufs [OPTIONS] SCRIPT MOUNTPOINT [-- ARGS]; see 'flufs --help')"
            );
            std::process::exit(2);
        }
    }
}

/// Half of MemTotal, the default Lua memory limit.
fn half_of_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024 / 2)
}
