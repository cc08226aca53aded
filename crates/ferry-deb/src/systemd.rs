//! Maintainer-script snippets for systemd units, in the spirit of debhelper's: enable and
//! start on install, restart (or reload) on upgrade, stop on removal, clean up on purge.
//! Every snippet is skipped when `DPKG_ROOT` is set (dpkg working on a sandbox root) and
//! only talks to systemd when it is the running init, so a chroot or sandbox install
//! never touches the host's services.

/// What to do with running units when the package is upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpgradeAction {
    /// `restart` (the default).
    #[default]
    Restart,
    /// `reload` of units that are running (the unit must support it). A failed reload
    /// fails the postinst: with `ferry run` it means the new version never took over, and
    /// dpkg (and ferry's agent, which then rolls back) must know.
    Reload,
    /// `reload-or-restart`.
    ReloadOrRestart,
    /// Leave running units alone (something else, like `ferry agent`, restarts them).
    None,
}

/// How the packaged units are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPolicy {
    /// The unit names (`hello.service`).
    pub units: Vec<String>,
    /// Enable the units on first install.
    pub enable: bool,
    /// Start them on install.
    pub start: bool,
    /// What to do on upgrade.
    pub on_upgrade: UpgradeAction,
}

/// The generated pieces for each maintainer script (empty when nothing is needed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snippets {
    /// For postinst.
    pub postinst: String,
    /// For prerm.
    pub prerm: String,
    /// For postrm.
    pub postrm: String,
}

/// The token a maintainer script may contain to say where generated code goes (the
/// debhelper one is accepted too).
pub const TOKENS: [&str; 2] = ["#FERRY#", "#DEBHELPER#"];

fn quote(unit: &str) -> String {
    format!("'{}'", unit.replace('\'', "'\\''"))
}

/// The snippets for `policy`.
pub fn snippets(policy: &UnitPolicy) -> Snippets {
    if policy.units.is_empty() {
        return Snippets::default();
    }
    let units = policy
        .units
        .iter()
        .map(|unit| quote(unit))
        .collect::<Vec<_>>()
        .join(" ");
    let configure = r#"[ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]"#;

    let mut postinst = String::from("# Added by ferry: systemd units\n");
    if policy.enable {
        postinst.push_str(&format!(
            r#"if [ -z "${{DPKG_ROOT:-}}" ] && {{ {configure}; }}; then
	for ferry_unit in {units}; do
		if command -v deb-systemd-helper >/dev/null 2>&1; then
			# was-enabled is true on a first install, so new installs get enabled
			# while a unit the admin disabled stays disabled across upgrades.
			if deb-systemd-helper --quiet was-enabled "$ferry_unit"; then
				deb-systemd-helper enable "$ferry_unit" >/dev/null || true
			else
				deb-systemd-helper update-state "$ferry_unit" >/dev/null || true
			fi
		elif [ -z "${{2:-}}" ] && command -v systemctl >/dev/null 2>&1; then
			systemctl --system enable "$ferry_unit" >/dev/null 2>&1 || true
		fi
	done
fi
"#
        ));
    }
    if policy.on_upgrade == UpgradeAction::Reload {
        return Snippets {
            postinst: reload_postinst(&postinst, configure, &units, policy.start),
            ..removal_snippets(&units)
        };
    }
    let upgrade = match policy.on_upgrade {
        UpgradeAction::Restart => "restart",
        UpgradeAction::Reload => "reload",
        UpgradeAction::ReloadOrRestart => "reload-or-restart",
        UpgradeAction::None => "",
    };
    let install = if policy.start { "start" } else { "" };
    postinst.push_str(&format!(
        r#"if [ -z "${{DPKG_ROOT:-}}" ] && {{ {configure}; }} && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
	if [ -n "${{2:-}}" ]; then ferry_action='{upgrade}'; else ferry_action='{install}'; fi
	if [ -n "$ferry_action" ]; then
		for ferry_unit in {units}; do
			if command -v deb-systemd-invoke >/dev/null 2>&1; then
				deb-systemd-invoke "$ferry_action" "$ferry_unit" >/dev/null || true
			else
				systemctl --system "$ferry_action" "$ferry_unit" >/dev/null || true
			fi
		done
	fi
fi
"#
    ));

    Snippets {
        postinst,
        ..removal_snippets(&units)
    }
}

/// The postinst for `on-upgrade = "reload"`: start on install as usual; on upgrade reload
/// each running unit and fail when a reload fails (a stopped unit is left stopped).
fn reload_postinst(enable: &str, configure: &str, units: &str, start: bool) -> String {
    let install = if start { "start" } else { "" };
    format!(
        r#"{enable}if [ -z "${{DPKG_ROOT:-}}" ] && {{ {configure}; }} && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
	for ferry_unit in {units}; do
		if [ -n "${{2:-}}" ]; then
			if systemctl --system --quiet is-active "$ferry_unit"; then
				if ! systemctl --system reload "$ferry_unit"; then
					echo "reloading $ferry_unit failed: the previous version keeps running (journalctl -u $ferry_unit)" >&2
					exit 1
				fi
			fi
		elif [ -n '{install}' ]; then
			if command -v deb-systemd-invoke >/dev/null 2>&1; then
				deb-systemd-invoke start "$ferry_unit" >/dev/null || true
			else
				systemctl --system start "$ferry_unit" >/dev/null || true
			fi
		fi
	done
fi
"#
    )
}

/// prerm and postrm: stop on removal, clean up on purge.
fn removal_snippets(units: &str) -> Snippets {
    let prerm = format!(
        r#"# Added by ferry: systemd units
if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	for ferry_unit in {units}; do
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			deb-systemd-invoke stop "$ferry_unit" >/dev/null || true
		else
			systemctl --system stop "$ferry_unit" >/dev/null || true
		fi
	done
fi
"#
    );

    let postrm = format!(
        r#"# Added by ferry: systemd units
if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ -z "${{DPKG_ROOT:-}}" ] && command -v deb-systemd-helper >/dev/null 2>&1; then
	for ferry_unit in {units}; do
		if [ "$1" = "remove" ]; then
			deb-systemd-helper mask "$ferry_unit" >/dev/null || true
		fi
		if [ "$1" = "purge" ]; then
			deb-systemd-helper purge "$ferry_unit" >/dev/null || true
			deb-systemd-helper unmask "$ferry_unit" >/dev/null || true
		fi
	done
fi
"#
    );
    Snippets {
        postinst: String::new(),
        prerm,
        postrm,
    }
}

/// Combine a user's maintainer script with a generated snippet. A `#FERRY#` (or
/// `#DEBHELPER#`) line in the script marks the spot; without one the snippet goes before a
/// final `exit 0`, or at the end. Without a user script, a `/bin/sh` script is made.
pub fn merge_script(user: Option<&str>, snippet: &str) -> String {
    let Some(user) = user else {
        if snippet.is_empty() {
            return String::new();
        }
        return format!("#!/bin/sh\nset -e\n\n{snippet}\nexit 0\n");
    };
    for token in TOKENS {
        if user.contains(token) {
            return user.replace(token, snippet.trim_end());
        }
    }
    if snippet.is_empty() {
        return user.to_string();
    }
    let lines: Vec<&str> = user.lines().collect();
    let last = lines.iter().rposition(|line| !line.trim().is_empty());
    let mut merged = String::new();
    match last {
        Some(index) if lines[index].trim() == "exit 0" => {
            for line in &lines[..index] {
                merged.push_str(line);
                merged.push('\n');
            }
            merged.push_str(snippet);
            merged.push_str("exit 0\n");
        }
        _ => {
            merged.push_str(user);
            if !user.ends_with('\n') {
                merged.push('\n');
            }
            merged.push_str(snippet);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UnitPolicy {
        UnitPolicy {
            units: vec!["hello.service".into()],
            enable: true,
            start: true,
            on_upgrade: UpgradeAction::Restart,
        }
    }

    #[test]
    fn every_snippet_is_guarded_by_dpkg_root() {
        let snippets = snippets(&policy());
        for text in [&snippets.postinst, &snippets.prerm, &snippets.postrm] {
            for line in text.lines().filter(|line| line.starts_with("if ")) {
                assert!(line.contains("DPKG_ROOT"), "unguarded: {line}");
            }
        }
        assert!(snippets.postinst.contains("'hello.service'"));
    }

    #[test]
    fn merging() {
        assert_eq!(merge_script(None, ""), "");
        assert!(merge_script(None, "X\n").starts_with("#!/bin/sh\nset -e\n"));
        assert_eq!(
            merge_script(Some("#!/bin/sh\na\n#FERRY#\nb\n"), "X\n"),
            "#!/bin/sh\na\nX\nb\n"
        );
        assert_eq!(
            merge_script(Some("#!/bin/sh\na\nexit 0\n\n"), "X\n"),
            "#!/bin/sh\na\nX\nexit 0\n"
        );
        assert_eq!(
            merge_script(Some("#!/bin/sh\na"), "X\n"),
            "#!/bin/sh\na\nX\n"
        );
    }

    #[test]
    fn a_reload_on_upgrade_fails_the_postinst_when_it_fails() {
        let reload = snippets(&UnitPolicy {
            on_upgrade: UpgradeAction::Reload,
            ..policy()
        });
        assert!(reload.postinst.contains("systemctl --system reload"));
        assert!(reload.postinst.contains("exit 1"));
        assert!(
            reload.postinst.contains("deb-systemd-helper"),
            "still enabled on install"
        );
        assert_eq!(reload.prerm, snippets(&policy()).prerm);
        let restart = snippets(&policy());
        assert!(
            !restart.postinst.contains("exit 1"),
            "a restart stays lenient"
        );
    }

    #[test]
    fn generated_scripts_are_valid_shell() {
        let reload = snippets(&UnitPolicy {
            on_upgrade: UpgradeAction::Reload,
            ..policy()
        });
        let snippets = snippets(&policy());
        for text in [
            &snippets.postinst,
            &snippets.prerm,
            &snippets.postrm,
            &reload.postinst,
        ] {
            let script = merge_script(None, text);
            let status = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }
}
