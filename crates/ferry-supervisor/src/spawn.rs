//! Starting a child with the systemd socket-activation protocol: the listeners as fds 3..,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, its own `NOTIFY_SOCKET`, and `LISTEN_PID` set to the
//! child's own PID — known only after fork, so it is written between fork and exec.
//!
//! std's `Command::pre_exec` cannot do that safely: setting a variable there allocates, and
//! allocating after fork in a multi-threaded process can deadlock. So everything (argv,
//! envp, a fixed-size slot for the PID digits) is prepared before fork, and the child runs
//! only async-signal-safe calls: setpgid, sigprocmask, signal, fcntl, dup2, close_range,
//! execve, _exit.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_handoff::{LISTEN_FDS_START, env};

use crate::Error;

/// Variables of the protocols that must never leak from the supervisor's own environment into
/// a child (they describe the supervisor's sockets, not the child's).
const PROTOCOL_VARIABLES: [&str; 4] = [
    env::LISTEN_PID,
    env::LISTEN_FDS,
    env::LISTEN_FDNAMES,
    env::NOTIFY_SOCKET,
];
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// Room for any PID's digits plus the terminating NUL.
const PID_DIGITS: usize = 24;

/// Find `program` the way a shell would: as given when it contains a `/`, else in `PATH`.
/// Done once, before fork, so the child does not search (and allocate).
pub fn resolve_program(program: &Path) -> Result<PathBuf, Error> {
    let not_found = |reason: String| Error::Spawn {
        program: program.to_owned(),
        reason,
    };
    if program.as_os_str().as_bytes().contains(&b'/') {
        let metadata = std::fs::metadata(program).map_err(|e| not_found(e.to_string()))?;
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            return Err(not_found("not an executable file".to_owned()));
        }
        return Ok(program.to_owned());
    }
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for directory in std::env::split_paths(&path) {
        let candidate = directory.join(program);
        if let Ok(metadata) = std::fs::metadata(&candidate)
            && metadata.is_file()
            && metadata.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(not_found("not found in PATH".to_owned()))
}

/// A started child: its PID, which is also its process group id.
#[derive(Debug)]
pub struct Spawned {
    /// The PID.
    pub pid: libc::pid_t,
}

/// Start `program arguments…` with `listeners` as fds 3.. named `names`, and
/// `NOTIFY_SOCKET=notify_socket`, in its own process group.
pub fn spawn(
    program: &Path,
    arguments: &[OsString],
    listeners: &[(&str, &OwnedFd)],
    notify_socket: &OsStr,
) -> Result<Spawned, Error> {
    let spawn_error = |reason: String| Error::Spawn {
        program: program.to_owned(),
        reason,
    };
    let c_string = |bytes: &[u8]| {
        CString::new(bytes)
            .map_err(|_| spawn_error("an argument or variable contains a NUL byte".to_owned()))
    };
    let program_c = c_string(program.as_os_str().as_bytes())?;
    let mut argv_c = vec![program_c.clone()];
    for argument in arguments {
        argv_c.push(c_string(argument.as_bytes())?);
    }
    let mut envp_c = Vec::new();
    for (key, value) in std::env::vars_os() {
        if PROTOCOL_VARIABLES
            .iter()
            .any(|variable| key == OsStr::new(variable))
        {
            continue;
        }
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp_c.push(c_string(&entry)?);
    }
    envp_c.push(c_string(
        format!("{}={}", env::LISTEN_FDS, listeners.len()).as_bytes(),
    )?);
    let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
    envp_c.push(c_string(
        format!("{}={}", env::LISTEN_FDNAMES, names.join(":")).as_bytes(),
    )?);
    let mut notify_entry = format!("{}=", env::NOTIFY_SOCKET).into_bytes();
    notify_entry.extend_from_slice(notify_socket.as_bytes());
    envp_c.push(c_string(&notify_entry)?);

    // The LISTEN_PID slot: written by the child after fork, so it is a plain buffer here.
    let mut listen_pid = vec![0u8; LISTEN_PID_PREFIX.len() + PID_DIGITS];
    listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
    let listen_pid_digits: *mut u8 = listen_pid[LISTEN_PID_PREFIX.len()..].as_mut_ptr();

    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|s| s.as_ptr()).collect();
    envp.push(listen_pid.as_ptr().cast());
    envp.push(std::ptr::null());
    let sources: Vec<libc::c_int> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let count = sources.len() as libc::c_int;
    let mut scratch: Vec<libc::c_int> = vec![-1; sources.len()];
    let scratch_pointer = scratch.as_mut_ptr();
    // SAFETY: getpid(2) has no preconditions.
    let supervisor_pid = unsafe { libc::getpid() };

    // SAFETY: after fork the child only calls async-signal-safe functions on memory prepared
    // above (its private copy), then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(spawn_error(format!(
            "fork failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        unsafe {
            child_after_fork(
                &program_c,
                &argv,
                &envp,
                &sources,
                scratch_pointer,
                count,
                listen_pid_digits,
                supervisor_pid,
            )
        }
    }
    // Also set the group from the parent, so it exists before anyone signals it.
    // SAFETY: setpgid on our own fresh child.
    unsafe {
        libc::setpgid(pid, pid);
    }
    drop(scratch);
    Ok(Spawned { pid })
}

/// The child's side, between fork and exec. Never returns.
///
/// # Safety
/// Only to be called in the child right after fork, with the buffers prepared by [`spawn`].
// Each argument is one piece prepared before fork; bundling them would only move the list.
#[allow(clippy::too_many_arguments)]
unsafe fn child_after_fork(
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    sources: &[libc::c_int],
    scratch: *mut libc::c_int,
    count: libc::c_int,
    listen_pid_digits: *mut u8,
    supervisor_pid: libc::pid_t,
) -> ! {
    unsafe {
        libc::setpgid(0, 0);
        // If the supervisor dies without draining (SIGKILL, a crash), the app is told to
        // drain instead of living on unsupervised. The signal follows the death of the thread
        // that forked; `Supervisor::run` forks from the task that runs it, which in `ferry
        // run` is the main thread. Checked again after arming, in case the supervisor died
        // in between.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != supervisor_pid {
            libc::_exit(125);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE in its own processes; an ignored signal stays ignored across
        // exec, so give the app the default back.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        // LISTEN_PID=<our pid>, written without allocating.
        let mut pid = libc::getpid() as u64;
        let mut digits = [0u8; 20];
        let mut length = 0;
        loop {
            digits[length] = b'0' + (pid % 10) as u8;
            length += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for index in 0..length {
            *listen_pid_digits.add(index) = digits[length - 1 - index];
        }
        *listen_pid_digits.add(length) = 0;

        // Move the listeners to 3.. in two steps, so a source that already sits on a target
        // number is not overwritten before it is copied.
        let first_free = LISTEN_FDS_START + count;
        for (index, source) in sources.iter().enumerate() {
            let copy = libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, first_free);
            if copy < 0 {
                libc::_exit(126);
            }
            *scratch.add(index) = copy;
        }
        for index in 0..sources.len() {
            // dup2 clears close-on-exec on the target: exactly the listeners survive exec.
            if libc::dup2(*scratch.add(index), LISTEN_FDS_START + index as libc::c_int) < 0 {
                libc::_exit(126);
            }
        }
        // Nothing else crosses exec, even a descriptor someone forgot to mark close-on-exec.
        if libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) != 0
        {
            let mut limit: libc::rlimit = std::mem::zeroed();
            let maximum = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(65536) as libc::c_int
            } else {
                4096
            };
            for fd in first_free..maximum {
                libc::close(fd);
            }
        }
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_program_finds_sh_and_rejects_missing() {
        assert!(resolve_program(Path::new("sh")).unwrap().is_absolute());
        let error = resolve_program(Path::new("/nonexistent/ferry-app")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/ferry-app"),
            "{error}"
        );
        let error = resolve_program(Path::new("ferry-no-such-program-anywhere")).unwrap_err();
        assert!(error.to_string().contains("not found in PATH"), "{error}");
    }
}
