//! `ferry cloud-init` end to end: the user-data it prints passes `cloud-init schema`, and
//! carried out in a sandboxed root — its `write_files` written under a temp root, its
//! `runcmd` run with `FERRY_BOOTSTRAP_ROOT` (dpkg --root, systemctl --root) — it installs
//! ferry's own package from the store's `ferry` channel (sha256 pinned), keeps the written
//! agent.toml over the package's template, enables the agent's unit, and the written agent
//! config, run by the installed ferry with `--once` against the file:// store, installs the
//! app. The sandbox differs from a server only where a test must: the agent's dpkg gets
//! `--root` and paths are moved under the temp root (the test says where).

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testutil::fleet::{Publisher, stripped_copy};
use ferry_testutil::{Dir, workspace_binary};
use support::*;

fn cloud_init_schema(file: &Path) {
    let output = ok(Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(file));
    assert!(
        stdout(&output).contains("Valid cloud-config"),
        "cloud-init schema: {}",
        stdout(&output)
    );
}

/// The YAML as JSON, read by cloud-init's own YAML library (python3-yaml, a dependency of
/// the cloud-init package).
fn parse_yaml(file: &Path) -> serde_json::Value {
    let output = ok(Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(file));
    serde_json::from_slice(&output.stdout).expect("python printed JSON")
}

/// The content of the user-data's `write_files` entry for `path`.
fn written_file(document: &serde_json::Value, path: &str) -> String {
    document["write_files"]
        .as_array()
        .expect("write_files")
        .iter()
        .find(|file| file["path"] == path)
        .unwrap_or_else(|| panic!("no write_files entry for {path}"))["content"]
        .as_str()
        .expect("a text content")
        .to_owned()
}

/// A path of the server, moved under the sandbox root.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[test]
fn user_data_is_valid_and_provisions_a_sandboxed_root() {
    let dir = Dir::new("ferry-cloud-init");
    let ferry_binary = Path::new(env!("CARGO_BIN_EXE_ferry"));

    // The release engineer: a key, ferry's own package on channel ferry/stable, and a
    // hello-service release on hello/stable.
    let (publisher, store) =
        Publisher::on_directory_store(ferry_binary, dir.path(), "hello", "stable");
    let ferry_deb = pack_ferry(&dir.join("ferry-build"), "zstd");
    ok(ferry()
        .args([
            "publish", "--quiet", "--store", &store, "--app", "ferry", "--key",
        ])
        .arg(dir.join("work/release.key"))
        .arg(&ferry_deb));
    let hello = stripped_copy(
        &workspace_binary("hello-service"),
        &dir.join("hello-service"),
    );
    let hello_deb = publisher.pack(&hello, "1.0.0", None);
    publisher.publish(&hello_deb);

    let user_data = dir.join("user-data.yaml");
    let output = ok(ferry()
        .args([
            "cloud-init",
            "--store",
            &store,
            "--app",
            "hello",
            "--channel",
            "stable",
        ])
        .arg("--trust")
        .arg(publisher.public_key())
        .args(["--interval", "30s"]));
    std::fs::write(&user_data, &output.stdout).unwrap();
    let text = stdout(&output);
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    for secret in [
        "AWS_ACCESS_KEY",
        "AWS_SECRET",
        "aws_secret",
        "SESSION_TOKEN",
        "PRIVATE",
    ] {
        assert!(
            !text.contains(secret),
            "the user-data mentions {secret}:\n{text}"
        );
    }
    cloud_init_schema(&user_data);

    let document = parse_yaml(&user_data);
    let files = document["write_files"].as_array().expect("write_files");
    let paths: Vec<&str> = files
        .iter()
        .filter_map(|file| file["path"].as_str())
        .collect();
    assert!(paths.contains(&"/etc/ferry/agent.toml"), "{paths:?}");
    let key_path = *paths
        .iter()
        .find(|path| path.starts_with("/etc/ferry/trusted/"))
        .expect("a trusted key file");
    let public_key = std::fs::read_to_string(publisher.public_key()).unwrap();

    // write_files, under the sandbox root.
    let root = dir.join("root");
    for file in files {
        let path = under(&root, file["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file["content"].as_str().expect("content")).unwrap();
        let mode = u32::from_str_radix(file["permissions"].as_str().unwrap(), 8).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(file["owner"], "root:root");
    }
    assert_eq!(
        std::fs::read_to_string(under(&root, key_path))
            .unwrap()
            .trim(),
        public_key.trim()
    );
    let written_config = std::fs::read_to_string(root.join("etc/ferry/agent.toml")).unwrap();

    // runcmd, with every path the user-data wrote moved under the root and the bootstrap
    // told to install into it.
    let host_had_config = Path::new("/etc/ferry/agent.toml").exists();
    let commands = document["runcmd"].as_array().expect("runcmd");
    assert!(!commands.is_empty());
    for entry in commands {
        let words: Vec<String> = entry
            .as_array()
            .expect("runcmd entries are argument lists")
            .iter()
            .map(|word| {
                let word = word.as_str().unwrap();
                if paths.contains(&word) {
                    under(&root, word).display().to_string()
                } else {
                    word.to_owned()
                }
            })
            .collect();
        ok(Command::new(&words[0])
            .args(&words[1..])
            .env("FERRY_BOOTSTRAP_ROOT", &root));
    }

    // The agent package is installed, its unit enabled, and cloud-init's config kept.
    assert!(
        sandbox_status(&root, "ferry").starts_with("install ok installed"),
        "{}",
        sandbox_status(&root, "ferry")
    );
    let installed_ferry = root.join("usr/bin/ferry");
    let version = ok(Command::new(&installed_ferry).arg("--version"));
    assert_eq!(
        stdout(&version).trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ferry/agent.toml")).unwrap(),
        written_config,
        "the package's template replaced the config cloud-init wrote"
    );
    assert!(root.join("etc/ferry/agent.toml.dpkg-dist").exists());
    let wants = root.join("etc/systemd/system/multi-user.target.wants/ferry-agent.service");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the agent's unit is not enabled ({} missing)",
        wants.display()
    );
    assert!(
        written_config.contains(&format!("store = \"{store}\"")),
        "{written_config}"
    );
    assert!(
        written_config.contains("interval = \"30s\""),
        "{written_config}"
    );

    // The written config, read by the installed agent's own parser.
    let trusted = under(&root, key_path);
    let state_dir = root.join("var/lib/ferry");
    let status = ok(Command::new(&installed_ferry)
        .args(["agent", "status", "--json", "--config"])
        .arg(root.join("etc/ferry/agent.toml"))
        .env("FERRY_TRUST", &trusted)
        .env("FERRY_STATE_DIR", &state_dir)
        .env("FERRY_HOST_ID", "sandbox-1"));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["app"], "hello");
    assert_eq!(status["channel"], "stable");

    // One agent cycle with that config. The sandbox's only changes: dpkg acts on the root
    // (`dpkg-args`, which the server does not need), and the key and state paths move under it.
    let sandbox_config = written_config.replace(
        "method = \"dpkg\"",
        &format!(
            "method = \"dpkg\"\ndpkg-args = [\"--root={root}\", \"--log={root}/var/log/dpkg.log\", \
             \"--force-script-chrootless\", \"--force-depends\", \"--force-not-root\"]",
            root = root.display()
        ),
    );
    assert_ne!(
        sandbox_config, written_config,
        "no [install] method = \"dpkg\" in the config"
    );
    let sandbox_config_path = dir.join("agent-sandbox.toml");
    std::fs::write(&sandbox_config_path, sandbox_config).unwrap();
    let once = ok(Command::new(&installed_ferry)
        .args(["agent", "--once", "--config"])
        .arg(&sandbox_config_path)
        .env("FERRY_TRUST", &trusted)
        .env("FERRY_STATE_DIR", &state_dir)
        .env("FERRY_HOST_ID", "sandbox-1")
        .env_remove("RUST_LOG"));
    assert!(
        sandbox_status(&root, "hello").starts_with("install ok installed 1.0.0"),
        "hello not installed in the sandbox: {}\nagent stderr: {}",
        sandbox_status(&root, "hello"),
        String::from_utf8_lossy(&once.stderr)
    );
    let mode = std::fs::metadata(root.join("usr/bin/hello-service"))
        .expect("hello-service installed in the sandbox")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "hello-service is not executable: {mode:o}"
    );

    assert!(!host_knows("ferry"), "the host's dpkg now knows ferry");
    assert!(!host_knows("hello"), "the host's dpkg now knows hello");
    assert_eq!(Path::new("/etc/ferry/agent.toml").exists(), host_had_config);
}

#[test]
fn agent_deb_url_with_sha256_is_valid_and_pinned() {
    let dir = Dir::new("ferry-cloud-init-url");
    let key = dir.join("release");
    ok(ferry().arg("keygen").arg(&key));
    let sha256 = "ab".repeat(32);
    let output = ok(ferry()
        .args([
            "cloud-init",
            "--store",
            "s3://fleet-bucket/ferry",
            "--app",
            "web",
        ])
        .args(["--s3-endpoint", "http://127.0.0.1:9000"])
        .arg("--trust")
        .arg(dir.join("release.pub"))
        .args([
            "--agent-deb",
            "https://downloads.example/ferry_0.1.0-1_amd64.deb",
        ])
        .args(["--agent-deb-sha256", &sha256])
        .args([
            "--restart-unit",
            "web.service",
            "--health-http",
            "http://127.0.0.1:8080/health",
            "--config-dir",
            "/etc/web/ferry",
            "--self-update",
        ]));
    let user_data = dir.write("user-data.yaml", &output.stdout);
    cloud_init_schema(&user_data);
    let document = parse_yaml(&user_data);
    let script = document["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["path"] == "/var/lib/ferry/bootstrap/install-agent.sh")
        .expect("the bootstrap script")["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(script.contains(&sha256), "{script}");
    assert!(
        script.contains("https://downloads.example/ferry_0.1.0-1_amd64.deb"),
        "{script}"
    );
    let config = written_file(&document, "/etc/ferry/agent.toml");
    for wanted in [
        "store = \"s3://fleet-bucket/ferry\"",
        "s3-endpoint = \"http://127.0.0.1:9000\"",
        "unit = \"web.service\"",
        "http = \"http://127.0.0.1:8080/health\"",
        "[config]\ndir = \"/etc/web/ferry\"",
        "[self-update]\napp = \"ferry\"\nchannel = \"stable\"\nmethod = \"dpkg\"",
    ] {
        assert!(config.contains(wanted), "{wanted} missing:\n{config}");
    }
    let packages = document["packages"].as_array().expect("packages");
    assert!(
        packages.iter().any(|package| package == "curl"),
        "{packages:?}"
    );

    // The script refuses a download with another hash and installs nothing.
    let root = dir.join("root");
    let wrong = dir.write("wrong.deb", b"not the package");
    let local_script = script.replace(
        "https://downloads.example/ferry_0.1.0-1_amd64.deb",
        &format!("file://{}", wrong.display()),
    );
    // The https fetch command is curl; point it at the local file instead (curl reads file://).
    let local_script = local_script.replace("--proto '=https'", "--proto '=file'");
    let script_path = dir.write("install-agent.sh", local_script);
    let refused = fails(
        Command::new("sh")
            .arg(&script_path)
            .env("FERRY_BOOTSTRAP_ROOT", &root),
    );
    assert!(refused.contains("expected"), "{refused}");
    assert!(
        !root.join("var/lib/dpkg/status").exists(),
        "dpkg ran after a hash mismatch"
    );
    assert!(!root.join("var/cache/ferry/bootstrap/agent.deb").exists());
}

#[test]
fn a_multi_app_agent_file_is_written_with_the_flags_store_and_keys() {
    let dir = Dir::new("ferry-cloud-init-apps");
    ok(ferry().arg("keygen").arg(dir.join("release")));
    let agent = dir.write(
        "apps.toml",
        "interval = \"30s\"\n\
         [[app]]\napp = \"web\"\n[app.install]\nmethod = \"unpack\"\nroot = \"/srv/web\"\n\
         [[app]]\napp = \"vision\"\nwindow = [\"Mon-Fri 02:00-05:00 UTC\"]\nupdate-lock = \"/run/vision/update.lock\"\n\
         [app.install]\nmethod = \"dpkg\"\n",
    );
    // `ferry cloud-init` for app web with `--agent-config FILE`.
    let cloud_init = |file: &Path| {
        let mut command = ferry();
        command
            .args([
                "cloud-init",
                "--store",
                "s3://fleet-bucket/ferry",
                "--app",
                "web",
            ])
            .arg("--trust")
            .arg(dir.join("release.pub"))
            .args(["--agent-deb", "https://downloads.example/ferry.deb"])
            .args(["--agent-deb-sha256", &"cd".repeat(32)])
            .arg("--agent-config")
            .arg(file);
        command
    };
    let output = ok(&mut cloud_init(&agent));
    let user_data = dir.write("user-data.yaml", &output.stdout);
    cloud_init_schema(&user_data);
    let document = parse_yaml(&user_data);
    let config = written_file(&document, "/etc/ferry/agent.toml");
    let file = ferry_agent::AgentFile::parse(&config, Path::new("agent.toml")).unwrap();
    assert_eq!(file.store.as_deref(), Some("s3://fleet-bucket/ferry"));
    assert_eq!(file.trust.len(), 1, "the --trust key: {config}");
    assert!(file.trust[0].starts_with("/etc/ferry/trusted"), "{config}");
    let apps: Vec<_> = file
        .apps
        .iter()
        .map(|app| app.app.clone().unwrap())
        .collect();
    assert_eq!(apps, ["web", "vision"], "{config}");
    assert_eq!(
        file.apps[1].window.as_deref(),
        Some(&["Mon-Fri 02:00-05:00 UTC".to_owned()][..])
    );

    // A bad file is refused before anything is printed, naming the table.
    let bad = dir.write(
        "bad.toml",
        "[[app]]\napp = \"web\"\nwindow = [\"Someday 02:00-05:00\"]\n[app.install]\nmethod = \"dpkg\"\n",
    );
    let refused = fails(&mut cloud_init(&bad));
    assert!(
        refused.contains("bad.toml is not a valid agent file") && refused.contains("not a day"),
        "{refused}"
    );
}

#[test]
fn bad_flags_and_stores_are_refused_with_a_reason() {
    let dir = Dir::new("ferry-cloud-init-errors");
    ok(ferry().arg("keygen").arg(dir.join("release")));
    ok(ferry().arg("keygen").arg(dir.join("other")));
    let store = format!("file://{}", dir.join("store").display());
    let base = |extra: &[&str]| {
        let mut command = ferry();
        command
            .args(["cloud-init", "--store", &store, "--app", "hello", "--trust"])
            .arg(dir.join("release.pub"))
            .args(extra);
        command
    };

    // No ferry channel in the store and no --agent-deb.
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let stderr = fails(&mut base(&[]));
    assert!(
        stderr.contains("no channel ferry/stable") && stderr.contains("--agent-deb"),
        "{stderr}"
    );
    // Plain http without a hash.
    let stderr = fails(&mut base(&[
        "--agent-deb",
        "http://example.invalid/ferry.deb",
    ]));
    assert!(stderr.contains("--agent-deb-sha256"), "{stderr}");
    // A hash that is not one.
    let stderr = fails(&mut base(&[
        "--agent-deb",
        "https://example.invalid/ferry.deb",
        "--agent-deb-sha256",
        "1234",
    ]));
    assert!(stderr.contains("not a sha256"), "{stderr}");
    // unpack without a root; an unknown method; a bad interval.
    let stderr = fails(&mut base(&[
        "--agent-deb",
        "https://x.invalid/f.deb",
        "--install",
        "unpack",
    ]));
    assert!(stderr.contains("--install-root"), "{stderr}");
    let stderr = fails(&mut base(&[
        "--agent-deb",
        "https://x.invalid/f.deb",
        "--install",
        "rpm",
    ]));
    assert!(stderr.contains("rpm"), "{stderr}");
    let stderr = fails(&mut base(&[
        "--agent-deb",
        "https://x.invalid/f.deb",
        "--interval",
        "soon",
    ]));
    assert!(stderr.contains("interval"), "{stderr}");
    // A trusted key that is not a key.
    let not_a_key = dir.write("not-a-key.pub", "hello\n");
    let stderr = fails(
        ferry()
            .args(["cloud-init", "--store", &store, "--app", "hello", "--trust"])
            .arg(&not_a_key)
            .args(["--agent-deb", "https://x.invalid/f.deb"]),
    );
    assert!(stderr.contains("not a minisign public key"), "{stderr}");

    // A ferry channel signed by a key the flags do not trust is refused.
    let other = dir.join("other.key");
    let deb = pack_ferry(&dir.join("build"), "zstd");
    ok(ferry()
        .args([
            "publish", "--quiet", "--store", &store, "--app", "ferry", "--key",
        ])
        .arg(&other)
        .arg(&deb));
    let stderr = fails(&mut base(&[]));
    assert!(stderr.contains("not trusted"), "{stderr}");
}
