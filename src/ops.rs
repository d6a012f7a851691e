//! The operation names a script may define, resolved once to Lua functions at mount time, and
//! the check that reports unknown names (typos) with the closest real one.

use crate::kernel::Readdirplus;
use mlua::{Function, Table, Value};

macro_rules! ops {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// One script operation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum OpName { $($variant),* }

        /// Every operation name, in `OpName` order.
        pub const NAMES: &[&str] = &[$($name),*];

        const ALL: &[OpName] = &[$(OpName::$variant),*];
    };
}

ops! {
    Init => "init",
    Destroy => "destroy",
    Getattr => "getattr",
    Fgetattr => "fgetattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Chmod => "chmod",
    Chown => "chown",
    Truncate => "truncate",
    Ftruncate => "ftruncate",
    Utimens => "utimens",
    Open => "open",
    Read => "read",
    Write => "write",
    Statfs => "statfs",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Opendir => "opendir",
    Readdir => "readdir",
    Releasedir => "releasedir",
    Fsyncdir => "fsyncdir",
    Access => "access",
    Create => "create",
    Lock => "lock",
    Flock => "flock",
    Fallocate => "fallocate",
    Lseek => "lseek",
    CopyFileRange => "copy_file_range",
    Bmap => "bmap",
}

impl OpName {
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// The script's functions, looked up once.
pub struct Ops {
    funcs: Vec<Option<Function>>,
    /// `fs.handle_killpriv = true`: the script drops set-user-ID and set-group-ID bits itself
    /// on write, truncate and chown, as Linux does (libfuse's FUSE_CAP_HANDLE_KILLPRIV_V2).
    pub handle_killpriv: bool,
    /// `fs.modes_as_numbers = true`: create, mknod, mkdir and chmod get the mode as an
    /// integer, not a Flu mode set.
    pub modes_as_numbers: bool,
    /// `fs.flags_as_numbers = true`: `fi.flags` is the integer of open(2) flags, not a set.
    pub flags_as_numbers: bool,
    /// `fs.readdirplus = "auto" | "always" | "never"`: when listings carry attributes
    /// (never without readdir).
    pub readdirplus: Readdirplus,
    /// `fs.reuse_listings = true`: the script's directories change only through the mount. A
    /// new open of a directory is served the listing an earlier one took, without a readdir
    /// call, while that listing is kept (see `dispatch::dirs`), and a lookup of a name missing
    /// from a directory made through the mount is answered without getattr (`dispatch::fresh`).
    pub reuse_listings: bool,
    /// `fs.no_xattrs_until_set = true`: a node made through the mount (create, mknod, mkdir,
    /// symlink) has no extended attributes until one is set on it through the mount. flufs
    /// answers a getxattr of a `user.`, `security.` or `trusted.` name on such a node ENODATA
    /// itself: the kernel asks every new file for `security.capability` before its first
    /// write, and `ls -l` every file for `security.selinux` (see `dispatch::misc`). Off when
    /// the script has no getxattr.
    pub no_xattrs_until_set: bool,
    /// `fs.unsupported_xattrs = { name, ... }`: extended attribute names the script does not
    /// support. flufs answers their getxattr, setxattr and removexattr EOPNOTSUPP itself, as a
    /// filesystem without that namespace does. `ls -l` asks every file for `security.selinux`
    /// and, told EOPNOTSUPP, asks no further file on that filesystem (see `dispatch::misc`).
    unsupported_xattrs: Vec<Box<[u8]>>,
    /// How many parameters each function declares (`usize::MAX`: vararg, C, or unknown).
    params: Vec<usize>,
}

/// The values `fs.readdirplus` may take.
const READDIRPLUS: [(&str, Readdirplus); 3] = [
    ("auto", Readdirplus::Auto),
    ("always", Readdirplus::Always),
    ("never", Readdirplus::Never),
];

/// The number of declared parameters of a Lua function, or nil when it takes any number.
const PARAMS: &str = r#"
local getinfo = debug and debug.getinfo
return function(f)
  if not getinfo then return nil end
  local ok, i = pcall(getinfo, f, "u")
  if not ok or i.isvararg or i.what == "C" then return nil end
  return i.nparams
end
"#;

impl Ops {
    /// Resolve every known name in `fs` (honouring `__index`). Returns the table and warnings
    /// about entries that are not operations.
    pub fn resolve(fs: &Table) -> mlua::Result<(Ops, Vec<String>)> {
        let mut funcs = Vec::with_capacity(ALL.len());
        let mut warnings = Vec::new();
        for op in ALL {
            match fs.get::<Value>(op.name())? {
                Value::Function(f) => funcs.push(Some(f)),
                Value::Nil => funcs.push(None),
                other => {
                    warnings.push(format!(
                        "operation '{}' is a {}, not a function; ignored",
                        op.name(),
                        other.type_name()
                    ));
                    funcs.push(None);
                }
            }
        }
        for pair in fs.pairs::<Value, Value>() {
            let (k, v) = pair?;
            let Value::String(k) = k else { continue };
            let k = k.to_string_lossy();
            if NAMES.contains(&k.as_str()) || !matches!(v, Value::Function(_)) {
                continue;
            }
            let hint = closest(&k)
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            warnings.push(format!(
                "'{k}' is not a filesystem operation and will never be called{hint}"
            ));
        }
        let mut setting = |name: &str| -> mlua::Result<bool> {
            Ok(match fs.get::<Value>(name)? {
                Value::Boolean(b) => b,
                Value::Nil => false,
                other => {
                    warnings.push(format!(
                        "'{name}' is a {}, not a boolean; ignored",
                        other.type_name()
                    ));
                    false
                }
            })
        };
        let handle_killpriv = setting("handle_killpriv")?;
        let modes_as_numbers = setting("modes_as_numbers")?;
        let flags_as_numbers = setting("flags_as_numbers")?;
        let reuse_listings = setting("reuse_listings")?;
        let no_xattrs_until_set = setting("no_xattrs_until_set")?;
        let unsupported_xattrs = names_setting(fs, "unsupported_xattrs", &mut warnings)?;
        let value = fs.get::<Value>("readdirplus")?;
        let named = match &value {
            Value::String(s) => READDIRPLUS
                .iter()
                .find(|(name, _)| s.as_bytes().as_ref() == name.as_bytes()),
            _ => None,
        };
        let readdirplus = match (named, &value) {
            (Some(&(_, r)), _) => r,
            (None, Value::Nil) => Readdirplus::Auto,
            (None, other) => {
                warnings.push(format!(
                    "'readdirplus' is {}, not \"auto\", \"always\" or \"never\"; \"auto\" is used",
                    match other {
                        Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
                        v => format!("a {}", v.type_name()),
                    }
                ));
                Readdirplus::Auto
            }
        };
        let params_of: Option<Function> = fs
            .weak_lua()
            .try_upgrade()
            .and_then(|lua| lua.load(PARAMS).set_name("=flufs.params").eval().ok());
        let params = funcs
            .iter()
            .map(|f| match (f, &params_of) {
                (Some(f), Some(p)) => p
                    .call::<Option<usize>>(f)
                    .ok()
                    .flatten()
                    .unwrap_or(usize::MAX),
                _ => usize::MAX,
            })
            .collect();
        let mut ops = Ops {
            funcs,
            handle_killpriv,
            modes_as_numbers,
            flags_as_numbers,
            readdirplus,
            reuse_listings,
            no_xattrs_until_set,
            unsupported_xattrs,
            params,
        };
        // With no readdir there is nothing to answer READDIRPLUS with.
        if !ops.has(OpName::Readdir) {
            ops.readdirplus = Readdirplus::Never;
        }
        // With no getxattr every getxattr gets ENOSYS, after which the kernel asks no more:
        // nothing for flufs to answer in the script's place.
        ops.no_xattrs_until_set &= ops.has(OpName::Getxattr);
        Ok((ops, warnings))
    }

    /// Whether the script declared extended attribute `name` unsupported
    /// (`fs.unsupported_xattrs`).
    pub fn unsupported_xattr(&self, name: &[u8]) -> bool {
        self.unsupported_xattrs.iter().any(|n| **n == *name)
    }

    pub fn get(&self, op: OpName) -> Option<&Function> {
        self.funcs.get(op as usize).and_then(|f| f.as_ref())
    }

    pub fn has(&self, op: OpName) -> bool {
        self.get(op).is_some()
    }

    /// Whether `op` can see an argument in position `n` (1-based): a function that declares
    /// fewer parameters (and no `...`) never reads it, so it need not be built.
    pub fn reads_arg(&self, op: OpName, n: usize) -> bool {
        self.params.get(op as usize).is_none_or(|&p| p >= n)
    }
}

/// A setting that is an array of strings (`fs.unsupported_xattrs`); anything else is warned
/// about and ignored, as the boolean settings are.
fn names_setting(
    fs: &Table,
    name: &str,
    warnings: &mut Vec<String>,
) -> mlua::Result<Vec<Box<[u8]>>> {
    let t = match fs.get::<Value>(name)? {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(t) => t,
        other => {
            warnings.push(format!(
                "'{name}' is a {}, not an array of names; ignored",
                other.type_name()
            ));
            return Ok(Vec::new());
        }
    };
    let mut names = Vec::new();
    for v in t.sequence_values::<Value>() {
        match v? {
            Value::String(s) => names.push(s.as_bytes().to_vec().into_boxed_slice()),
            other => {
                warnings.push(format!(
                    "'{name}' holds a {}, not a name; ignored",
                    other.type_name()
                ));
                return Ok(Vec::new());
            }
        }
    }
    Ok(names)
}

/// The known operation name closest to `name` (edit distance, or a shared prefix).
pub fn closest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for &n in NAMES {
        let mut d = levenshtein(&lower, n);
        if lower.starts_with(n) || n.starts_with(&lower) {
            d = d.min(2);
        }
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, n));
        }
    }
    best.filter(|&(d, n)| d <= n.len().max(3) / 2 + 1)
        .map(|(_, n)| n)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_real_operation() {
        assert_eq!(closest("getattribute"), Some("getattr"));
        assert_eq!(closest("readir"), Some("readdir"));
        assert_eq!(closest("opne"), Some("open"));
        assert_eq!(closest("Write"), Some("write"));
        assert_eq!(closest("my_helper_function"), None);
    }

    #[test]
    fn resolve_reports_unknown_functions_only() {
        let lua = mlua::Lua::new();
        let fs: Table = lua
            .load("{getattr=function() end, getattribute=function() end, version='1', readdir=3}")
            .eval()
            .unwrap();
        let (ops, warnings) = Ops::resolve(&fs).unwrap();
        assert!(ops.has(OpName::Getattr));
        assert!(!ops.has(OpName::Readdir));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("getattribute") && w.contains("'getattr'"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("'readdir' is a") && w.contains("not a function"))
        );
    }

    #[test]
    fn unsupported_xattrs_are_names_or_warned_about() {
        let lua = mlua::Lua::new();
        let resolve = |src: &str| {
            let fs: Table = lua.load(src).eval().unwrap();
            Ops::resolve(&fs).unwrap()
        };
        let (ops, warnings) = resolve("{unsupported_xattrs = {'security.selinux', 'user.x'}}");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(ops.unsupported_xattr(b"security.selinux"));
        assert!(ops.unsupported_xattr(b"user.x"));
        assert!(!ops.unsupported_xattr(b"security.selinu"));
        assert!(!ops.unsupported_xattr(b"security.selinux.x"));
        assert!(!resolve("{}").0.unsupported_xattr(b"security.selinux"));
        for bad in [
            "{unsupported_xattrs = 'security.selinux'}",
            "{unsupported_xattrs = {1}}",
        ] {
            let (ops, warnings) = resolve(bad);
            assert!(ops.unsupported_xattrs.is_empty(), "{bad}");
            assert!(
                warnings.len() == 1 && warnings[0].contains("'unsupported_xattrs'"),
                "{bad}: {warnings:?}"
            );
        }
    }
}
