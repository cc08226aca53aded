//! The faults that used to freeze or wedge a fleet (issue "make every fault end in service
//! running, next good release taken"), one test per fault, each named after it. Every test first
//! reproduces the fault for real — a forged pointer written into the store, a wiped state
//! directory and a replayed pointer, a blob removed and restored, a tmpfs filled up, `/dev/zero`
//! and a FIFO handed over as key files — then asserts what the operator cares about: the service
//! still answers on its last good version, and the next good release is taken by the same agent
//! without anyone deleting anything.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_release::{ChannelPointer, Envelope, SigningKey};
use ferry_testutil::ChildGuard;

use support::faults::*;
use support::world::*;

/// `ferry publish` of `deb` with `extra` flags, run to completion.
fn publish_with(world: &World, deb: &Path, extra: &[&str]) -> Output {
    let mut command = world.channel_command("publish");
    command.args(extra).arg(deb);
    run_bounded(&mut command, Duration::from_secs(60))
}

/// The serial the channel's pointer holds now (signature not checked).
fn pointer_serial(world: &World) -> u64 {
    let bytes = world
        .get(&ChannelPointer::path(APP, CHANNEL))
        .expect("a pointer");
    let envelope = Envelope::from_bytes(&bytes, "pointer").unwrap();
    serde_json::from_str::<ChannelPointer>(&envelope.payload)
        .unwrap()
        .serial
}

/// A copy of the current pointer with `serial` and the old signature: what someone with write
/// access to the store but no signing key can produce.
fn forge_pointer(world: &World, serial: u64) -> Vec<u8> {
    let bytes = world.get(&ChannelPointer::path(APP, CHANNEL)).unwrap();
    let mut envelope = Envelope::from_bytes(&bytes, "pointer").unwrap();
    let mut pointer: ChannelPointer = serde_json::from_str(&envelope.payload).unwrap();
    pointer.serial = serial;
    envelope.payload = serde_json::to_string(&pointer).unwrap();
    envelope.to_bytes()
}

/// v1 installed and answering, the service's PID returned.
fn with_v1_running(world: &World) -> u32 {
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    world.service_pid().expect("service pid")
}

/// Start `ferry agent` in the background, its log in `agent.log`.
fn spawn_agent(world: &World) -> ChildGuard {
    let mut command = world.agent();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.dir.join("agent.log")).unwrap());
    ChildGuard::spawn(&mut command)
}

fn agent_log(world: &World) -> String {
    std::fs::read_to_string(world.dir.join("agent.log")).unwrap_or_default()
}

/// Wait up to `limit` for the agent's log to contain `text`.
fn wait_for_log(world: &World, text: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if agent_log(world).contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn assert_still_on(world: &World, version: &str, pid: u32, what: &str) {
    assert_eq!(
        wait_for_version(world.port, version),
        version,
        "{what}: the service must still answer {version}"
    );
    assert_eq!(
        world.service_pid(),
        Some(pid),
        "{what}: the service was restarted"
    );
    assert_eq!(
        std::fs::read_link(world.root().join("current")).unwrap(),
        Path::new("releases").join(version),
        "{what}"
    );
}

#[test]
fn item1_an_unsigned_pointer_near_the_top_of_u64_cannot_freeze_the_channel() {
    let world = World::new("hardening-item1", false, Restart::Script);
    let pid = with_v1_running(&world);
    let v2 = build_deb(&world.dir, "2.0.0", None);

    // The attack: serial 2^64-2 with a signature that does not match, pointer and history.
    let forged = forge_pointer(&world, u64::MAX - 1);
    world.put(
        &ChannelPointer::history_path(APP, CHANNEL, u64::MAX - 1),
        forged.clone(),
    );
    world.put(&ChannelPointer::path(APP, CHANNEL), forged);

    // Agents refuse it and stay where they are.
    let output = world.agent_once(None);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_still_on(&world, "1.0.0", pid, "after the forged pointer");

    // A real publish refuses to build on it, says what to do, and writes nothing.
    let output = publish_with(&world, &v2, &[]);
    assert!(
        !output.status.success(),
        "publish built on a forged pointer"
    );
    let message = stderr(&output);
    assert!(message.contains("refusing to build on"), "{message}");
    assert!(message.contains("--force-reset"), "{message}");
    assert_eq!(pointer_serial(&world), u64::MAX - 1);
    assert!(world.get("apps/hello/releases/2.0.0.json").is_none());

    // The explicit reset continues from the highest verified serial: 1 → 2, never a wrap.
    let output = publish_with(&world, &v2, &["--force-reset", "--json"]);
    assert_ok(&output, "publish --force-reset");
    let published: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(published["serial"], 2, "{published}");
    assert_ok(&world.agent_once(None), "agent taking v2 after the reset");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    assert_eq!(world.status_json()["highest-serial"], 2);

    // The next ordinary publish and rollback build on the repaired channel.
    world.rollback_to("1.0.0");
    assert_eq!(pointer_serial(&world), 3);
    assert_ok(&world.agent_once(None), "agent following the rollback");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
}

#[test]
fn item1_a_signed_serial_past_the_limit_is_refused_by_agents_and_publishers() {
    let world = World::new("hardening-item1-limit", false, Restart::Script);
    let pid = with_v1_running(&world);
    let v1 = std::fs::read(world.dir.join("hello-service_1.0.0.deb")).unwrap();
    // Signed by the real key (a buggy tool that holds it), with a serial no publish writes.
    world.publish_raw(&v1, None, "1.0.0", u64::MAX - 1, |_| {});
    let output = world.agent_once(None);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("outside the range"),
        "{}",
        stderr(&output)
    );
    assert_still_on(&world, "1.0.0", pid, "after the impossible serial");
    assert_eq!(
        world.status_json()["highest-serial"],
        1,
        "the floor must not move"
    );

    let v2 = build_deb(&world.dir, "2.0.0", None);
    let output = publish_with(&world, &v2, &[]);
    assert!(
        stderr(&output).contains("outside the range"),
        "{}",
        stderr(&output)
    );
    assert_ok(
        &publish_with(&world, &v2, &["--force-reset"]),
        "publish --force-reset",
    );
    assert_ok(&world.agent_once(None), "agent taking v2");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    assert_eq!(world.status_json()["highest-serial"], 2);
}

#[test]
fn item2_a_wiped_state_dir_does_not_let_a_replayed_pointer_take_the_host_back() {
    let world = World::new("hardening-item2", false, Restart::Script);
    with_v1_running(&world);
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    assert_ok(&world.agent_once(None), "agent installing v2");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    let pid = world.service_pid().unwrap();
    let old = world
        .get(&ChannelPointer::history_path(APP, CHANNEL, 1))
        .unwrap();

    // Reinstall, disk swap, restored image: the journal (and the cache inside it) is gone.
    std::fs::remove_dir_all(world.dir.join("state")).unwrap();
    // A stale replica or an attacker serves the old, validly signed serial 1 (release 1.0.0).
    world.put(&ChannelPointer::path(APP, CHANNEL), old);
    let output = world.agent_once(None);
    // The old pointer is ignored, not installed: the same answer a CDN edge that still caches
    // the previous pointer gets (docs/scale.md). The host stays healthy on 2.0.0.
    assert_ok(&output, "agent facing the replayed pointer");
    assert!(
        stderr(&output)
            .contains("ignored a stale channel pointer: serial 1 is lower than serial 2"),
        "{}",
        stderr(&output)
    );
    let status = world.status_json();
    assert_ne!(
        status["state"], "refused",
        "the replay is no fault of the host: {status}"
    );
    assert!(status["last-error"].is_null(), "{status}");
    assert!(
        stderr(&output).contains("signed copy kept on this host"),
        "{}",
        stderr(&output)
    );
    assert_still_on(&world, "2.0.0", pid, "after the replay");

    // The next good release is taken.
    world.publish(&build_deb(&world.dir, "3.0.0", None), "3.0.0");
    assert_eq!(pointer_serial(&world), 3);
    assert_ok(&world.agent_once(None), "agent installing v3");
    assert_eq!(wait_for_version(world.port, "3.0.0"), "3.0.0");
}

#[test]
fn item3_a_blob_missing_for_a_moment_is_retried_not_marked_bad() {
    let world = World::new("hardening-item3", false, Restart::Script);
    let pid = with_v1_running(&world);
    let v2 = build_deb(&world.dir, "2.0.0", None);
    let reference = ferry_release::ArtifactRef::new(
        &ferry_release::sha256_hex(&std::fs::read(&v2).unwrap()),
        std::fs::metadata(&v2).unwrap().len(),
    );
    world.publish(&v2, "2.0.0");
    // A lagging replica: the pointer is there, the blob (and the patch index) not yet.
    let store_dir = PathBuf::from(world.store_url.strip_prefix("file://").unwrap());
    let blob = store_dir.join(&reference.path);
    let aside = world.dir.join("blob-aside");
    std::fs::rename(&blob, &aside).unwrap();
    let index = store_dir.join(ferry_release::layout::deltas("hello", "2.0.0"));
    if index.exists() {
        std::fs::remove_file(&index).unwrap();
    }

    let mut agent = spawn_agent(&world);
    assert!(
        wait_for_log(&world, "retrying the update", Duration::from_secs(20)),
        "{}",
        agent_log(&world)
    );
    assert_still_on(&world, "1.0.0", pid, "while the blob is missing");
    assert_eq!(world.status_json()["bad"], serde_json::json!([]));

    // The blob arrives: the same agent takes the release by itself.
    std::fs::rename(&aside, &blob).unwrap();
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    assert!(agent.child().try_wait().unwrap().is_none(), "agent exited");
    drop(agent);
    assert_eq!(world.status_json()["bad"], serde_json::json!([]));
}

#[test]
fn item4_a_full_cache_disk_does_not_wedge_the_agent_and_a_newer_smaller_release_is_taken() {
    let world = World::new("hardening-item4-cache", false, Restart::Script);
    let v1 = build_deb(&world.dir, "1.0.0", None);
    let small = std::fs::metadata(&v1).unwrap().len();
    // Room for the installed release's cached package and a little more; not for v2.
    let size = small * 3 + (1 << 20);
    let cache = Tmpfs::mount(world.dir.join("cache"), size);
    world.write_config(&world.default_health());
    set_config_key(&world, &format!("cache-dir = \"{}\"", cache.path.display()));
    world.publish(&v1, "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid().unwrap();

    let big = build_deb_with_files(
        &world.dir,
        "2.0.0",
        None,
        &[(
            "usr/share/hello-service/padding",
            noise(size as usize + (4 << 20)),
        )],
    );
    world.publish(&big, "2.0.0");
    let mut agent = spawn_agent(&world);
    assert!(
        wait_for_log(&world, "no space left on", Duration::from_secs(20)),
        "{}",
        agent_log(&world)
    );
    let log = agent_log(&world);
    let line = log
        .lines()
        .find(|line| line.contains("no space left on"))
        .unwrap();
    assert_eq!(
        line.matches("no space left on").count(),
        1,
        "said once: {line}"
    );
    assert!(
        line.contains("need ") && line.contains(" MB, have "),
        "{line}"
    );
    assert_still_on(&world, "1.0.0", pid, "with the cache disk too small");
    // Nothing partial keeps the disk full.
    let parts: Vec<_> = std::fs::read_dir(&cache.path)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "partial downloads left: {parts:?}");

    // A newer, smaller release is seen by the same running agent and installed.
    world.publish(&build_deb(&world.dir, "3.0.0", None), "3.0.0");
    assert_eq!(wait_for_version(world.port, "3.0.0"), "3.0.0");
    assert!(agent.child().try_wait().unwrap().is_none(), "agent exited");
    drop(agent);
    assert_eq!(world.status_json()["bad"], serde_json::json!([]));
}

#[test]
fn item3_item4_an_install_root_without_space_says_so_and_the_release_is_taken_once_space_is_freed()
{
    let world = World::new("hardening-item4-root", false, Restart::Script);
    let v1 = build_deb(&world.dir, "1.0.0", None);
    let unpacked = std::fs::metadata(hello_service_binary()).unwrap().len();
    let size = unpacked * 3 + (2 << 20);
    let root = Tmpfs::mount(world.root(), size);
    with_v1_running(&world);
    let pid = world.service_pid().unwrap();
    let _ = v1;

    let big = build_deb_with_files(
        &world.dir,
        "2.0.0",
        None,
        &[("usr/share/hello-service/padding", noise(size as usize))],
    );
    world.publish(&big, "2.0.0");
    let output = world.agent_once(None);
    assert!(!output.status.success(), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("no space left on"), "{message}");
    assert!(!message.contains("corrupt"), "{message}");
    assert_still_on(&world, "1.0.0", pid, "with the install root too small");
    assert_eq!(world.status_json()["bad"], serde_json::json!([]));
    assert_eq!(world.status_json()["state"], "retrying");

    // Space is freed: the same release is installed, nobody deleted anything.
    root.resize(size * 4);
    assert_ok(
        &world.agent_once(None),
        "agent installing v2 once there is room",
    );
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

#[test]
fn item5_dev_zero_and_a_fifo_as_trust_or_key_are_refused_at_once() {
    let world = World::new("hardening-item5", false, Restart::Script);
    let pid = with_v1_running(&world);
    let fifo = world.dir.join("trust.fifo");
    mkfifo(&fifo);
    let good = std::fs::read_to_string(world.config_path()).unwrap();
    let trusted = format!("{}/release.pub", world.dir.path().display());
    for bad in ["/dev/zero", fifo.to_str().unwrap()] {
        std::fs::write(world.config_path(), good.replace(&trusted, bad)).unwrap();
        // Bounded: before the fix /dev/zero ran until the OOM killer and a FIFO hung forever.
        let output = world.agent_once(None);
        assert!(!output.status.success(), "{bad}: {}", stderr(&output));
        assert!(stderr(&output).contains(bad), "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("not a regular file"),
            "{bad}: {}",
            stderr(&output)
        );
        assert_still_on(&world, "1.0.0", pid, bad);

        let mut command = ferry();
        command
            .args(["publish", "--app", APP, "--store"])
            .arg(&world.store_url)
            .args(["--key", bad])
            .arg(world.dir.join("hello-service_1.0.0.deb"));
        let output = run_bounded(&mut command, Duration::from_secs(20));
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("not a regular file"),
            "{bad}: {}",
            stderr(&output)
        );
    }
    std::fs::write(world.config_path(), &good).unwrap();
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    assert_ok(&world.agent_once(None), "agent installing v2");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

#[test]
fn item6_publish_refuses_an_already_expired_pointer_and_a_cut_short_package() {
    let world = World::new("hardening-item6-publish", false, Restart::Script);
    with_v1_running(&world);
    let v2 = build_deb(&world.dir, "2.0.0", None);
    let output = publish_with(&world, &v2, &["--expires-in", "0s"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not in the future"),
        "{}",
        stderr(&output)
    );
    assert_eq!(pointer_serial(&world), 1);

    let bytes = std::fs::read(&v2).unwrap();
    let cut = world.dir.join("hello-service_2.0.0-cut.deb");
    std::fs::write(&cut, &bytes[..bytes.len() - bytes.len() / 4]).unwrap();
    let output = publish_with(&world, &cut, &[]);
    assert!(!output.status.success(), "a cut-short .deb was published");
    assert!(
        stderr(&output).contains("not a complete .deb"),
        "{}",
        stderr(&output)
    );
    assert_eq!(pointer_serial(&world), 1);
    assert!(world.get("apps/hello/releases/2.0.0.json").is_none());
}

#[test]
fn item6_a_gnu_sparse_file_in_a_package_installs() {
    let world = World::new("hardening-item6-sparse", false, Restart::Script);
    with_v1_running(&world);
    // A data.tar written by GNU tar --sparse: hello-service plus a 4 MiB file that is mostly hole.
    let stage = world.dir.join("sparse-stage");
    std::fs::create_dir_all(stage.join("usr/bin")).unwrap();
    std::fs::create_dir_all(stage.join("usr/share/hello-service")).unwrap();
    std::fs::copy(hello_service_binary(), stage.join("usr/bin/hello-service")).unwrap();
    std::fs::write(stage.join("usr/share/hello-service/version"), "2.0.0\n").unwrap();
    let sparse = stage.join("usr/share/hello-service/sparse.db");
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::File::create(&sparse).unwrap();
        file.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
        file.write_all(b"tail").unwrap();
    }
    let data_tar = world.dir.join("sparse-data.tar");
    let status = Command::new("tar")
        .args(["--sparse", "--format=gnu", "--owner=0", "--group=0", "-cf"])
        .arg(&data_tar)
        .arg("-C")
        .arg(&stage)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let deb = deb_with_data(
        &world.dir,
        "sparse",
        "2.0.0",
        std::fs::read(&data_tar).unwrap(),
    );
    let deb_path = world.dir.join("hello-service_2.0.0_sparse.deb");
    std::fs::write(&deb_path, deb).unwrap();
    world.publish(&deb_path, "2.0.0");
    assert_ok(
        &world.agent_once(None),
        "agent installing the package with a sparse file",
    );
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    let installed = std::fs::read(
        world
            .root()
            .join("current/usr/share/hello-service/sparse.db"),
    )
    .unwrap();
    assert_eq!(installed.len(), (4 << 20) + 4);
    assert!(installed[..4 << 20].iter().all(|byte| *byte == 0));
    assert_eq!(&installed[4 << 20..], b"tail");
}

#[test]
fn item6_a_removed_store_directory_is_a_store_that_is_down_and_the_agent_waits_for_it() {
    let world = World::new("hardening-item6-store-dir", false, Restart::Script);
    let pid = with_v1_running(&world);
    let store_dir = PathBuf::from(world.store_url.strip_prefix("file://").unwrap());
    let aside = world.dir.join("store-aside");
    std::fs::rename(&store_dir, &aside).unwrap();

    // Started while the store is gone: it must wait, not exit.
    let mut agent = spawn_agent(&world);
    assert!(
        wait_for_log(&world, "retrying", Duration::from_secs(20)),
        "{}",
        agent_log(&world)
    );
    assert!(
        agent.child().try_wait().unwrap().is_none(),
        "the agent exited"
    );
    // The store comes back, goes again while the agent runs, then comes back with a release.
    std::fs::rename(&aside, &store_dir).unwrap();
    assert!(
        wait_for_log(&world, "agent started", Duration::from_secs(20)),
        "{}",
        agent_log(&world)
    );
    std::fs::rename(&store_dir, &aside).unwrap();
    assert!(
        wait_for_log(&world, "store directory", Duration::from_secs(20)),
        "{}",
        agent_log(&world)
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = agent_log(&world);
    assert!(
        !log.contains("no release published on this channel yet"),
        "a missing store directory is not an empty channel:\n{log}"
    );
    assert!(log.contains("backing off"), "{log}");
    assert_still_on(&world, "1.0.0", pid, "while the store directory is gone");
    std::fs::rename(&aside, &store_dir).unwrap();
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    assert!(agent.child().try_wait().unwrap().is_none(), "agent exited");
}

#[test]
fn item7_a_publish_or_rollback_signed_with_another_key_is_refused_unless_new_key() {
    let world = World::new("hardening-item7-key", false, Restart::Script);
    let pid = with_v1_running(&world);
    let other = ferry_release::generate_key_pair(&world.dir.join("other")).unwrap();
    let v2 = build_deb(&world.dir, "2.0.0", None);
    let with_other_key = |extra: &[&str], subcommand: &[&str]| {
        let mut command = ferry();
        command
            .args(subcommand)
            .args(["--app", APP, "--channel", CHANNEL, "--store"])
            .arg(&world.store_url)
            .arg("--key")
            .arg(&other.secret_path)
            .args(extra);
        run_bounded(&mut command, Duration::from_secs(60))
    };
    let v2_text = v2.to_str().unwrap();
    // Without --trust the current pointer cannot even be verified with the other key.
    let output = with_other_key(&[v2_text], &["publish"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--trust"), "{}", stderr(&output));
    // Verified, but signed by another key: a rotation must be said out loud.
    let release_pub = world.dir.join("release.pub");
    let trust = release_pub.to_str().unwrap();
    let output = with_other_key(&["--trust", trust, v2_text], &["publish"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--new-key"), "{}", stderr(&output));
    let output = with_other_key(&["--trust", trust], &["rollback"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--new-key"), "{}", stderr(&output));
    assert_eq!(pointer_serial(&world), 1, "nothing may be written");
    assert_ok(&world.agent_once(None), "idle agent");
    assert_still_on(&world, "1.0.0", pid, "after the refused publishes");

    // The rotation: agents trust both keys, the publisher says --new-key.
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replace(
            &format!("trust = [\"{trust}\"]"),
            &format!("trust = [\"{trust}\", \"{}\"]", other.public_path.display()),
        ),
    )
    .unwrap();
    assert_ok(
        &with_other_key(&["--trust", trust, "--new-key", v2_text], &["publish"]),
        "publish --new-key",
    );
    assert_ok(
        &world.agent_once(None),
        "agent installing v2 signed by the new key",
    );
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    // From now on the new key needs nothing special, and the old one is the stranger.
    // Re-signing an old release into the channel needs its signer trusted, as any build-on does.
    assert_ok(
        &with_other_key(&["--trust", trust], &["rollback"]),
        "rollback with the new key",
    );
    let output = publish_with(&world, &build_deb(&world.dir, "3.0.0", None), &[]);
    assert!(stderr(&output).contains("--trust"), "{}", stderr(&output));
}

#[test]
fn item7_a_typo_in_a_file_store_path_is_refused_and_the_public_key_is_named() {
    let world = World::new("hardening-item7-typo", false, Restart::Script);
    let v1 = build_deb(&world.dir, "1.0.0", None);
    let typo = world.dir.join("stroe");
    let mut command = ferry();
    command
        .args(["publish", "--app", APP, "--store"])
        .arg(format!("file://{}", typo.display()))
        .arg("--key")
        .arg(world.dir.join("release.key"))
        .arg(&v1);
    let output = run_bounded(&mut command, Duration::from_secs(30));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--create-store"),
        "{}",
        stderr(&output)
    );
    assert!(!typo.exists(), "a typo'd path became a store");
    command.arg("--create-store");
    assert_ok(
        &run_bounded(&mut command, Duration::from_secs(30)),
        "publish --create-store",
    );
    assert!(typo.join("apps/hello/channels/stable.json").is_file());

    let mut command = ferry();
    command
        .args(["publish", "--app", APP, "--store"])
        .arg(&world.store_url)
        .arg("--key")
        .arg(world.dir.join("release.pub"))
        .arg(&v1);
    let output = run_bounded(&mut command, Duration::from_secs(30));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("this is a public key"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("failed to fill"),
        "{}",
        stderr(&output)
    );
    let _ = SigningKey::from_file(&world.dir.join("release.key"), None).unwrap();
}
