//! What a forked worker shows in `/proc/PID/cmdline` and `environ`: an executed worker's
//! command line and environment. Without it, a worker forked by the zygote (`zygote.rs`) would
//! show the coordinator's, as it was when the coordinator started: no run variables.

/// The kernel's record of where a process's memory areas are (`struct prctl_mm_map`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: *mut u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// What `/proc/PID/cmdline` and `environ` show: an executed worker's command line (`powerpool
/// worker`) and environment (with the run's variables), not the coordinator's, which a forked
/// process would otherwise show. Monitoring tools, and anyone tracing a worker by hand, see what
/// they would see of an executed one.
pub(super) struct Shown {
    map: MmMap,
    args: &'static [u8],
}

impl Shown {
    /// Reads the zygote's map (`/proc/self/stat`), the same in every process it forks.
    pub(super) fn read() -> Option<Shown> {
        let stat = own_stat()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        // Fields of proc(5), numbered from 1; `rest` starts at field 3.
        let field = |n: usize| fields.get(n - 3).copied();
        let map = MmMap {
            start_code: field(26)?,
            end_code: field(27)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
            brk: 0,
            start_stack: field(28)?,
            arg_start: field(48)?,
            arg_end: field(49)?,
            env_start: field(50)?,
            env_end: field(51)?,
            auxv: std::ptr::null_mut(),
            auxv_size: 0,
            exe_fd: u32::MAX,
        };
        let exe = std::env::current_exe().ok()?;
        let mut args = exe.into_os_string().into_encoded_bytes();
        args.extend_from_slice(b"\0worker\0");
        Some(Shown { map, args: args.leak() })
    }

    /// Points this process's command line and environment at new copies (leaked: they live as
    /// long as the process). Unprivileged (`PR_SET_MM_MAP` without a new executable); where it is
    /// refused, the coordinator's stay on show and nothing else changes.
    pub(super) fn show(&self) {
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            env.extend_from_slice(key.as_encoded_bytes());
            env.push(b'=');
            env.extend_from_slice(value.as_encoded_bytes());
            env.push(0);
        }
        let env = env.leak();
        let mut map = self.map;
        map.arg_start = self.args.as_ptr() as u64;
        map.arg_end = map.arg_start + self.args.len() as u64;
        map.env_start = env.as_ptr() as u64;
        map.env_end = map.env_start + env.len() as u64;
        // SAFETY: brk(0) only reads the current break; prctl reads the struct we pass, whose
        // other fields are this process's own (forked from the zygote that read them).
        unsafe {
            map.brk = libc::syscall(libc::SYS_brk, 0) as u64;
            libc::prctl(
                libc::PR_SET_MM,
                libc::PR_SET_MM_MAP as libc::c_ulong,
                &map as *const MmMap as libc::c_ulong,
                std::mem::size_of::<MmMap>() as libc::c_ulong,
                0,
            );
        }
    }
}

/// `/proc/self/stat`, read in one call into a buffer on the stack: `read_to_string` asks for
/// its size (`statx`) and reads in pieces growing from 32 bytes, seven calls for a file of
/// 300 bytes, on the path of every run that forks its workers.
fn own_stat() -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/self/stat").ok()?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => return String::from_utf8(buf[..len].to_vec()).ok(),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // Longer than any stat line (52 numbers and a name of at most 64 bytes): not one.
    None
}
