//! End-to-end tests of the signed release store: `ferry keygen`, `publish`, `releases`,
//! `rollback`, `promote` and `verify`, run as the real binary against BOTH backends — a
//! `file://` directory and a real S3-compatible server (moto, on 127.0.0.1) — with packages
//! built by the real `dpkg-deb` and signatures checked by the real `minisign`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_testutil::s3::{ConditionStrippingProxy, S3Server};

mod fixture;

use fixture::*;

fn publish_verify_rollback_promote(backend: Backend) {
    let fixture = Fixture::new(backend);
    let amd64 = fixture.deb("1.0-1", "amd64", "one amd64");
    let arm64 = fixture.deb("1.0-1", "arm64", "one arm64");
    let first = json(&fixture.publish(&[&amd64, &arm64], &["--json"]));
    assert_eq!(first["serial"], 1);
    assert_eq!(
        first["artifacts"].as_array().unwrap().len(),
        2,
        "multi-arch: one release"
    );
    assert_success(&fixture.verify("stable", &fixture.public));
    // Trusted keys from FERRY_TRUST (as agents take them) and none at all.
    let mut command = fixture.command(&["verify", "--store", &fixture.store, "--app", "hello"]);
    command.env(
        "FERRY_TRUST",
        format!(
            "{}:{}",
            fixture.dir.join("missing-is-an-error.pub").display(),
            fixture.public.display()
        ),
    );
    let output = run_bounded(command);
    assert!(
        !output.status.success() && text(&output).contains("missing-is-an-error.pub"),
        "{}",
        text(&output)
    );
    let mut command = fixture.command(&["verify", "--store", &fixture.store, "--app", "hello"]);
    command.env("FERRY_TRUST", fixture.public.display().to_string());
    assert_success(&run_bounded(command));
    let output = fixture.run(&["verify", "--store", &fixture.store, "--app", "hello"]);
    assert!(
        !output.status.success() && text(&output).contains("no trusted public key"),
        "{}",
        text(&output)
    );

    let raw = fixture.raw();
    let pointer = pointer_payload(&raw, "stable");
    assert_eq!(pointer["release"]["version"], "1.0-1");
    assert_eq!(
        pointer["release"]["artifacts"].as_object().unwrap().len(),
        2
    );
    assert_eq!(pointer["rollout"]["waves"][0]["percent"], 100);
    assert_eq!(pointer["paused"], false);
    assert!(pointer["expires_at"].is_null());

    // Same version, same bytes: nothing changes.
    let again = json(&fixture.publish(&[&amd64, &arm64], &["--json"]));
    assert!(again["serial"].is_null(), "{again}");
    assert_eq!(releases(&fixture, "stable").len(), 1);

    let second = fixture.deb("2.0-1", "amd64", "two");
    assert_eq!(json(&fixture.publish(&[&second], &["--json"]))["serial"], 2);
    assert_success(&fixture.verify("stable", &fixture.public));

    // Same version, other bytes: refused, nothing changed.
    let impostor = fixture.deb("2.0-1", "amd64", "not two");
    let output = fixture.publish(&[&impostor], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("already exists with different artifacts"),
        "{}",
        text(&output)
    );
    assert_eq!(pointer_payload(&raw, "stable")["serial"], 2);

    let key = fixture.key.to_str().unwrap();
    let output = fixture.run(&[
        "rollback",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        key,
    ]);
    assert_success(&output);
    assert_eq!(pointer_payload(&raw, "stable")["serial"], 3);
    assert_eq!(
        pointer_payload(&raw, "stable")["release"]["version"],
        "1.0-1"
    );
    assert_success(&fixture.verify("stable", &fixture.public));

    let output = fixture.run(&[
        "rollback",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        key,
        "--to",
        "2.0-1",
    ]);
    assert_success(&output);
    assert_eq!(
        releases(&fixture, "stable"),
        vec![
            (1, "1.0-1".into(), false),
            (2, "2.0-1".into(), false),
            (3, "1.0-1".into(), false),
            (4, "2.0-1".into(), true)
        ]
    );
    let newest = json(&fixture.run(&[
        "releases",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--last",
        "2",
        "--json",
    ]));
    let newest: Vec<u64> = newest
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(newest, vec![3, 4]);
    let output = fixture.run(&[
        "rollback",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        key,
        "--to",
        "9.9",
    ]);
    assert!(
        !output.status.success() && text(&output).contains("never pointed at version 9.9"),
        "{}",
        text(&output)
    );

    let output = fixture.run(&[
        "promote",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--from",
        "stable",
        "--to",
        "beta",
        "--key",
        key,
    ]);
    assert_success(&output);
    assert_eq!(releases(&fixture, "beta"), vec![(1, "2.0-1".into(), true)]);
    assert_success(&fixture.verify("beta", &fixture.public));

    let listing = fixture.run(&["releases", "--store", &fixture.store, "--app", "hello"]);
    assert_success(&listing);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.contains("* ") && listing.contains("2.0-1"),
        "{listing}"
    );
}

fn dry_run_writes_nothing(backend: Backend) {
    let fixture = Fixture::new(backend);
    if backend == Backend::File {
        // A store that does not exist yet: the dry run must not create it.
        std::fs::remove_dir(fixture.dir.join("store")).unwrap();
    }
    let deb = fixture.deb("1.0-1", "amd64", "x");
    let plan = json(&fixture.publish(&[&deb], &["--dry-run", "--json"]));
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["artifacts"][0]["upload"], true);
    assert_eq!(plan["version"], "1.0-1");
    match backend {
        Backend::File => assert!(
            !fixture.dir.join("store").exists(),
            "dry run created the store"
        ),
        Backend::S3 => assert_eq!(fixture.raw().list(""), Vec::<String>::new()),
    }
    let output = fixture.publish(&[&deb], &["--dry-run"]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing written"));
}

fn tampering_is_rejected(backend: Backend) {
    let fixture = Fixture::new(backend);
    let deb = fixture.deb("1.0-1", "amd64", "original");
    let published = json(&fixture.publish(&[&deb], &["--json"]));
    let artifact = published["artifacts"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = fixture.raw();

    // A byte changed in the artifact.
    let original = raw.get(&artifact);
    let mut changed = original.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x20;
    raw.put(&artifact, changed);
    assert_rejected(&fixture.verify("stable", &fixture.public), "sha256");
    raw.put(&artifact, original);
    assert_success(&fixture.verify("stable", &fixture.public));

    // A byte changed in the release document.
    let release_path = "apps/hello/releases/1.0-1.json";
    let original = raw.get(release_path);
    let tampered = String::from_utf8(original.clone())
        .unwrap()
        .replacen("original", "0riginal", 0)
        .replacen("\\\"size\\\":", "\\\"size\\\": ", 1);
    assert_ne!(tampered.as_bytes(), &original[..]);
    raw.put(release_path, tampered.into_bytes());
    assert_rejected(&fixture.verify("stable", &fixture.public), "bad signature");
    raw.put(release_path, original);

    // A byte changed in the pointer.
    let pointer_path = "apps/hello/channels/stable.json";
    let original = raw.get(pointer_path);
    let tampered = String::from_utf8(original.clone()).unwrap().replacen(
        "\\\"paused\\\":false",
        "\\\"paused\\\":true ",
        1,
    );
    assert_ne!(tampered.as_bytes(), &original[..]);
    raw.put(pointer_path, tampered.into_bytes());
    assert_rejected(&fixture.verify("stable", &fixture.public), "bad signature");
    raw.put(pointer_path, original.clone());
    assert_success(&fixture.verify("stable", &fixture.public));

    // Signed by a key that is not trusted.
    let other = fixture.run(&["keygen", fixture.dir.join("other").to_str().unwrap()]);
    assert_success(&other);
    assert_rejected(
        &fixture.verify("stable", &fixture.dir.join("other.pub")),
        "not among the trusted keys",
    );

    // An old (validly signed) pointer replayed after a newer one was seen.
    let newer = fixture.deb("2.0-1", "amd64", "newer");
    assert_success(&fixture.publish(&[&newer], &[]));
    assert_success(&fixture.verify("stable", &fixture.public));
    raw.put(pointer_path, original);
    assert_rejected(
        &fixture.verify("stable", &fixture.public),
        "lower than serial 2",
    );
}

fn minisign_checks_artifacts_and_pointer(backend: Backend) {
    let fixture = Fixture::new(backend);
    // A key pair from the stock tool works for publishing and verifying.
    let stock_public = fixture.dir.join("stock.pub");
    let stock_secret = fixture.dir.join("stock.key");
    let output = run_bounded({
        let mut command = Command::new("minisign");
        command
            .args(["-G", "-W", "-p"])
            .arg(&stock_public)
            .arg("-s")
            .arg(&stock_secret);
        command
    });
    assert_success(&output);
    let deb = fixture.deb("1.0-1", "amd64", "payload");
    let mut args = vec![
        "publish",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        stock_secret.to_str().unwrap(),
        "--json",
    ];
    let deb_text = deb.display().to_string();
    args.push(&deb_text);
    let published = json(&fixture.run(&args));
    assert_success(&fixture.verify("stable", &stock_public));
    assert_rejected(
        &fixture.verify("stable", &fixture.public),
        "not among the trusted keys",
    );

    let raw = fixture.raw();
    let artifact = published["artifacts"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let artifact_file = fixture.dir.write("download.deb", raw.get(&artifact));
    let signature_file = fixture.dir.write(
        "download.deb.minisig",
        raw.get(&format!("{artifact}.minisig")),
    );
    let minisign_verify = |data: &Path, signature: &Path| {
        let mut command = Command::new("minisign");
        command
            .arg("-V")
            .arg("-p")
            .arg(&stock_public)
            .arg("-m")
            .arg(data)
            .arg("-x")
            .arg(signature);
        run_bounded(command)
    };
    assert_success(&minisign_verify(&artifact_file, &signature_file));

    // The pointer: payload text and signature out of the envelope, then the stock tool.
    let envelope: serde_json::Value =
        serde_json::from_slice(&raw.get("apps/hello/channels/stable.json")).unwrap();
    let payload = fixture
        .dir
        .write("pointer.json", envelope["payload"].as_str().unwrap());
    let signature = fixture.dir.write(
        "pointer.json.minisig",
        envelope["signature"].as_str().unwrap(),
    );
    let output = minisign_verify(&payload, &signature);
    assert_success(&output);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("serial=1"),
        "{}",
        text(&output)
    );

    // And the stock tool notices a change too.
    let mut changed = std::fs::read(&payload).unwrap();
    changed[5] ^= 1;
    std::fs::write(&payload, changed).unwrap();
    assert!(!minisign_verify(&payload, &signature).status.success());
}

fn concurrent_publishes_get_distinct_serials(backend: Backend) {
    const PUBLISHERS: usize = 8;
    let fixture = Fixture::new(backend);
    let debs: Vec<PathBuf> = (1..=PUBLISHERS)
        .map(|index| fixture.deb(&format!("{index}.0-1"), "amd64", &format!("build {index}")))
        .collect();
    let children: Vec<_> = debs
        .iter()
        .map(|deb| {
            let mut command = fixture.command(&[
                "publish",
                "--store",
                &fixture.store,
                "--app",
                "hello",
                "--key",
                fixture.key.to_str().unwrap(),
                "--json",
                deb.to_str().unwrap(),
            ]);
            std::thread::spawn(move || {
                run_bounded({
                    command.stdin(Stdio::null());
                    command
                })
            })
        })
        .collect();
    let mut serials: Vec<u64> = Vec::new();
    let mut versions_by_serial = std::collections::BTreeMap::new();
    for child in children {
        let output = child.join().unwrap();
        let value = json(&output);
        let serial = value["serial"].as_u64().unwrap();
        serials.push(serial);
        versions_by_serial.insert(serial, value["version"].as_str().unwrap().to_owned());
    }
    serials.sort_unstable();
    assert_eq!(
        serials,
        (1..=PUBLISHERS as u64).collect::<Vec<_>>(),
        "every publish got its own serial"
    );

    let history = releases(&fixture, "stable");
    assert_eq!(history.len(), PUBLISHERS, "{history:?}");
    for (serial, version, _) in &history {
        assert_eq!(
            &versions_by_serial[serial], version,
            "history {serial} records that publish's release"
        );
    }
    let raw = fixture.raw();
    let pointer = pointer_payload(&raw, "stable");
    assert_eq!(
        pointer["serial"], PUBLISHERS as u64,
        "the pointer ends at the highest serial"
    );
    assert_eq!(
        pointer["release"]["version"].as_str().unwrap(),
        versions_by_serial[&(PUBLISHERS as u64)]
    );
    assert_success(&fixture.verify("stable", &fixture.public));
}

fn leftover_history_from_a_crashed_publish_is_skipped(backend: Backend) {
    let fixture = Fixture::new(backend);
    let first = fixture.deb("1.0-1", "amd64", "one");
    assert_success(&fixture.publish(&[&first], &[]));
    // A publisher that died after claiming serial 2 but before moving the pointer.
    let raw = fixture.raw();
    let history_one = raw.get("apps/hello/channels/stable/history/1.json");
    raw.put("apps/hello/channels/stable/history/2.json", history_one);
    let second = fixture.deb("2.0-1", "amd64", "two");
    let value = json(&fixture.publish(&[&second], &["--json"]));
    assert_eq!(value["serial"], 3);
    assert_eq!(pointer_payload(&raw, "stable")["serial"], 3);
    assert_success(&fixture.verify("stable", &fixture.public));
}

fn bad_input_is_a_clear_error(backend: Backend) {
    let fixture = Fixture::new(backend);
    let not_a_deb = fixture.dir.write("junk.deb", "this is not a package");
    let output = fixture.publish(&[&not_a_deb], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("junk.deb"), "{}", text(&output));

    let output = fixture.run(&["keygen", fixture.dir.join("release").to_str().unwrap()]);
    assert!(
        !output.status.success() && text(&output).contains("refusing to overwrite"),
        "{}",
        text(&output)
    );

    let output = fixture.verify("stable", &fixture.public);
    assert!(!output.status.success());
    assert!(text(&output).contains("not found"), "{}", text(&output));

    let deb = fixture.deb("1.0-1", "amd64", "x");
    let output = fixture.publish(&[&deb], &["--channel", "../etc"]);
    assert!(
        !output.status.success() && text(&output).contains("cannot be used in a store path"),
        "{}",
        text(&output)
    );
}

fn expiry_and_channel_edges(backend: Backend) {
    let fixture = Fixture::new(backend);
    let key = fixture.key.to_str().unwrap().to_owned();
    let output = fixture.run(&["releases", "--store", &fixture.store, "--app", "hello"]);
    assert!(
        !output.status.success() || String::from_utf8_lossy(&output.stdout).contains("no history"),
        "{}",
        text(&output)
    );
    let output = fixture.run(&[
        "rollback",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        &key,
    ]);
    assert!(!output.status.success(), "{}", text(&output));

    let deb = fixture.deb("1.0-1", "amd64", "x");
    // Long enough for the publish itself to finish on a slow, loaded machine.
    assert_success(&fixture.publish(&[&deb], &["--expires-in", "5s"]));
    let raw = fixture.raw();
    assert!(pointer_payload(&raw, "stable")["expires_at"].is_string());
    let output = fixture.run(&[
        "rollback",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--key",
        &key,
    ]);
    assert!(
        !output.status.success() && text(&output).contains("no earlier version"),
        "{}",
        text(&output)
    );
    // Wait (bounded) until the pointer has expired; then it is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = fixture.verify("stable", &fixture.public);
        if !output.status.success() && text(&output).contains("expired") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pointer never expired: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Publishing the same release again refreshes the pointer (a new serial without expiry).
    let value = json(&fixture.publish(&[&deb], &["--json"]));
    assert_eq!(value["serial"], 2);
    assert_success(&fixture.verify("stable", &fixture.public));

    let output = fixture.run(&[
        "promote",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--from",
        "nothing",
        "--to",
        "stable",
        "--key",
        &key,
    ]);
    assert!(
        !output.status.success() && text(&output).contains("never been published"),
        "{}",
        text(&output)
    );
}

fn publish_killed_midway_leaves_nothing_the_next_one_trips_on(backend: Backend) {
    let fixture = Fixture::new(backend);
    // Big enough for a multipart upload, so the kill lands somewhere inside the publish.
    let payload: String = (0..(24 << 20) / 64)
        .map(|index| format!("{index:063}\n"))
        .collect();
    let big = fixture.deb("1.0-1", "amd64", &payload);
    for delay_ms in [50, 200] {
        let mut command = fixture.command(&[
            "publish",
            "--store",
            &fixture.store,
            "--app",
            "hello",
            "--key",
            fixture.key.to_str().unwrap(),
            big.to_str().unwrap(),
        ]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = ferry_testutil::ChildGuard::spawn(&mut command);
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no cleanup of any kind runs in the publisher.
        child.signal(9);
        let _ = child.child().wait();
    }
    let value = json(&fixture.publish(&[&big], &["--json"]));
    assert!(
        value["serial"].as_u64().is_some() || value["channel_unchanged"] == true,
        "{value}"
    );
    assert_success(&fixture.verify("stable", &fixture.public));
    let second = fixture.deb("2.0-1", "amd64", "small");
    assert_success(&fixture.publish(&[&second], &[]));
    assert_success(&fixture.verify("stable", &fixture.public));
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod file {
            $( #[test] fn $case() { super::$case(super::Backend::File) } )*
        }
        mod s3 {
            $( #[test] fn $case() { super::$case(super::Backend::S3) } )*
        }
    };
}

on_both_backends!(
    publish_verify_rollback_promote,
    dry_run_writes_nothing,
    tampering_is_rejected,
    minisign_checks_artifacts_and_pointer,
    concurrent_publishes_get_distinct_serials,
    leftover_history_from_a_crashed_publish_is_skipped,
    bad_input_is_a_clear_error,
    expiry_and_channel_edges,
    publish_killed_midway_leaves_nothing_the_next_one_trips_on,
);

// ---------------------------------------------------------------------------------------
// S3-only failure modes.

fn publish_with_endpoint(fixture: &Fixture, endpoint: &str, store: &str, extra: &[&str]) -> Output {
    let deb = fixture.deb("1.0-1", "amd64", "x");
    let mut args = vec![
        "publish",
        "--store",
        store,
        "--app",
        "hello",
        "--key",
        fixture.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let deb_text = deb.display().to_string();
    args.push(&deb_text);
    let mut command = fixture.command(&args);
    command
        .env("FERRY_S3_ENDPOINT", endpoint)
        .env("AWS_ENDPOINT_URL", endpoint);
    run_bounded(command)
}

#[test]
fn s3_store_down_is_a_clear_error_and_leaves_nothing_behind() {
    let fixture = Fixture::new(Backend::S3);
    let dead = format!("http://127.0.0.1:{}", ferry_testutil::free_port());
    let output = publish_with_endpoint(&fixture, &dead, &fixture.store, &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("cannot reach the store"),
        "{}",
        text(&output)
    );
    // The real store, reached again: the publish goes through from scratch.
    let endpoint = fixture.server.as_ref().unwrap().endpoint();
    assert_success(&publish_with_endpoint(
        &fixture,
        &endpoint,
        &fixture.store,
        &[],
    ));
    assert_success(&fixture.verify("stable", &fixture.public));
}

#[test]
fn s3_missing_bucket_is_a_clear_error() {
    let fixture = Fixture::new(Backend::S3);
    let endpoint = fixture.server.as_ref().unwrap().endpoint();
    let output = publish_with_endpoint(&fixture, &endpoint, "s3://no-such-bucket/fleet", &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("bucket does not exist"),
        "{}",
        text(&output)
    );
    let output = fixture.run(&[
        "verify",
        "--store",
        "s3://no-such-bucket/x",
        "--app",
        "hello",
        "--trust",
        fixture.public.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("bucket does not exist"),
        "{}",
        text(&output)
    );
}

#[test]
fn s3_wrong_credentials_are_a_clear_error() {
    let fixture = Fixture::new(Backend::S3);
    let strict = S3Server::start_with_auth();
    let output = publish_with_endpoint(&fixture, &strict.endpoint(), &fixture.store, &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("access denied"), "{}", text(&output));
}

#[test]
fn s3_store_ignoring_conditional_writes_is_refused_unless_single_publisher() {
    let fixture = Fixture::new(Backend::S3);
    let proxy = ConditionStrippingProxy::start(fixture.server.as_ref().unwrap().port());
    let output = publish_with_endpoint(&fixture, &proxy.endpoint(), &fixture.store, &[]);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message.contains("ignores conditional writes") && message.contains("--single-publisher"),
        "{message}"
    );
    let raw = fixture.raw();
    assert!(
        raw.list("apps").is_empty(),
        "nothing was published: {:?}",
        raw.list("apps")
    );

    assert_success(&publish_with_endpoint(
        &fixture,
        &proxy.endpoint(),
        &fixture.store,
        &["--single-publisher"],
    ));
    assert_success(&fixture.verify("stable", &fixture.public));
}
