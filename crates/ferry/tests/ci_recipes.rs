//! The CI recipes in docs/ci.md work as written: each YAML block parses, and every `ferry`
//! command in it runs with the job's environment (secrets filled in, `FERRY_STORE` pointed at
//! a `file://` store) from a git checkout, while an agent follows the channel. The deploy
//! must roll out (exit 0) and the status must show the host on the new release.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_testutil::Dir;
use ferry_testutil::fleet::{GroupGuard, run_bounded};
use yaml_rust2::{Yaml, YamlLoader};

/// One shell command of a recipe, with the environment the CI system would give it.
struct Step {
    recipe: &'static str,
    command: String,
    environment: Vec<(String, String)>,
}

fn variables(yaml: &Yaml) -> Vec<(String, String)> {
    yaml.as_hash()
        .map(|hash| {
            hash.iter()
                .filter_map(|(name, value)| {
                    let value = match value {
                        Yaml::String(text) => text.clone(),
                        Yaml::Integer(number) => number.to_string(),
                        _ => return None,
                    };
                    Some((name.as_str()?.to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `ferry` commands of a GitHub Actions workflow, with workflow and step `env`.
fn github_steps(workflow: &Yaml) -> Vec<Step> {
    let global = variables(&workflow["env"]);
    let mut steps = Vec::new();
    for (_, job) in workflow["jobs"].as_hash().expect("a workflow has jobs") {
        for step in job["steps"].as_vec().expect("a job has steps") {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            let mut environment = global.clone();
            environment.extend(variables(&step["env"]));
            for command in run
                .lines()
                .filter(|line| line.trim_start().starts_with("ferry "))
            {
                steps.push(Step {
                    recipe: "GitHub Actions",
                    command: command.trim().to_owned(),
                    environment: environment.clone(),
                });
            }
        }
    }
    steps
}

/// The `ferry` commands of a GitLab CI pipeline, with each job's `variables`.
fn gitlab_steps(pipeline: &Yaml) -> Vec<Step> {
    let mut steps = Vec::new();
    for (_, job) in pipeline.as_hash().expect("a pipeline is a mapping") {
        let Some(script) = job["script"].as_vec() else {
            continue;
        };
        let environment = variables(&job["variables"]);
        for line in script.iter().filter_map(Yaml::as_str) {
            if line.trim_start().starts_with("ferry ") {
                steps.push(Step {
                    recipe: "GitLab CI",
                    command: line.trim().to_owned(),
                    environment: environment.clone(),
                });
            }
        }
    }
    steps
}

/// `${{ secrets.NAME }}` and `${{ github.NAME }}` as GitHub fills them in.
fn expand_github(text: &str, secrets: &[(&str, &str)]) -> String {
    let mut text = text.replace("${{ github.run_number }}", "7");
    for (name, value) in secrets {
        text = text.replace(&format!("${{{{ secrets.{name} }}}}"), value);
    }
    assert!(
        !text.contains("${{"),
        "an expression the test does not know: {text}"
    );
    text
}

#[test]
fn the_ci_recipes_deploy_as_written() {
    let markdown =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ci.md"))
            .unwrap();
    let blocks = ferry_testutil::fenced_blocks(&markdown, "yaml");
    assert_eq!(blocks.len(), 2, "docs/ci.md should hold two YAML recipes");
    let github = &YamlLoader::load_from_str(&blocks[0]).expect("the GitHub recipe parses")[0];
    let gitlab = &YamlLoader::load_from_str(&blocks[1]).expect("the GitLab recipe parses")[0];

    for (index, steps) in [github_steps(github), gitlab_steps(gitlab)]
        .into_iter()
        .enumerate()
    {
        assert!(
            steps
                .iter()
                .any(|step| step.command.starts_with("ferry deploy")),
            "recipe {index} has no ferry deploy"
        );
        let dir = Dir::new(&format!("ci-recipe-{index}"));
        let store_dir = dir.join("store");
        std::fs::create_dir_all(&store_dir).unwrap();
        let store = format!("file://{}", store_dir.display());
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        support::ok(support::ferry().arg("keygen").arg(keys.join("release")));
        let key_text = std::fs::read_to_string(keys.join("release.key")).unwrap();
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("build")).unwrap();
        std::fs::write(
            repo.join("ferry.toml"),
            r#"[package]
name = "hello"
version = "1.0.0"
maintainer = "ferry CI tests <ci@example.com>"
description = "hello-service for the CI recipe test"

[[files]]
source = "/bin/true"
dest = "/usr/bin/hello-service"
mode = "0755"

[[files]]
source = "build/version"
dest = "/usr/share/hello-service/version"

[deploy]
store = "s3://my-bucket/ferry"
timeout = "60s"
pre = ["printf '%s\n' \"$FERRY_DEPLOY_VERSION\" > build/version"]
"#,
        )
        .unwrap();
        std::fs::write(repo.join(".gitignore"), "build/\ntarget/\n").unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "ferry.toml", ".gitignore"],
            &[
                "-c",
                "user.name=ci",
                "-c",
                "user.email=ci@example.com",
                "commit",
                "-q",
                "-m",
                "x",
            ],
        ] {
            let status = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        }

        // One host follows the channel, so the deploy's watch has a fleet to see.
        let agent_file = ferry_agent::AgentFile {
            store: Some(store.clone()),
            app: Some("hello".into()),
            trust: vec![keys.join("release.pub")],
            host_id: Some("ci-host".into()),
            interval: Some("200ms".into()),
            state_dir: Some(dir.join("host/state")),
            install: Some(ferry_agent::config::InstallFile::Unpack {
                root: dir.join("host/srv"),
                keep: None,
            }),
            ..Default::default()
        };
        std::fs::write(dir.join("agent.toml"), agent_file.to_toml().unwrap()).unwrap();
        let mut agent = Command::new(env!("CARGO_BIN_EXE_ferry"));
        agent
            .args(["agent", "--config"])
            .arg(dir.join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _agent = GroupGuard::spawn(&mut agent);

        let secrets = [
            ("FERRY_RELEASE_KEY", key_text.as_str()),
            ("AWS_ACCESS_KEY_ID", "unused-on-file-stores"),
            ("AWS_SECRET_ACCESS_KEY", "unused-on-file-stores"),
        ];
        let ferry_dir = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
        let mut outputs = Vec::new();
        for step in steps {
            // `sh` with the environment ferry's tests give every command (no FERRY_*, AWS_*
            // of this process), then the job's.
            let line = expand_github(&step.command, &secrets);
            let mut shell = ferry_testutil::ferry_command(Path::new("sh"));
            shell
                .arg("-c")
                .arg(&line)
                .current_dir(&repo)
                .env("PATH", format!("{}:/usr/bin:/bin", ferry_dir.display()))
                .env("CI_PIPELINE_IID", "7");
            // GitLab hands masked variables to the job as environment variables.
            if step.recipe == "GitLab CI" {
                shell.env("FERRY_RELEASE_KEY", &key_text);
            }
            for (name, value) in &step.environment {
                shell.env(name, expand_github(value, &secrets));
            }
            shell.env("FERRY_STORE", &store);
            let output = run_bounded(&mut shell, Duration::from_secs(120));
            assert!(
                output.status.success(),
                "{}: `{line}` failed ({}):\n{}\n{}",
                step.recipe,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let all = outputs.join("\n");
        assert!(all.contains("rolled out 1.0.7"), "{all}");
        assert!(
            all.contains("ci-host") && all.contains("1.0.7"),
            "status: {all}"
        );
    }
}
