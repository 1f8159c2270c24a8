//! Board profiles: what one kind of board needs to run the kiosk well. `boards/NAME.toml`,
//! compiled into the binary; `facegate run --board NAME` (or `--board FILE.toml` for a profile
//! of one's own).
//!
//! A profile names its target triple (and is refused by a binary built for another
//! architecture), the CPU kind tract should tune its kernels for, worker threads, the camera,
//! the model variant with the reason for it, and a `[kiosk]` section with the same keys as the
//! configuration file's: detector input, relay line, decision settings. The configuration file
//! (`--config`) overrides the profile's `[kiosk]` key by key.
//!
//! Every field is checked when the profile is read, and an error names the field.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::kiosk::KioskConfig;
use crate::source::PixelFormat;

/// The profiles in `boards/`, compiled in: (name, TOML text).
pub const BUNDLED: &[(&str, &str)] = &[
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rpi-armv7", include_str!("../boards/rpi-armv7.toml")),
    ("jetson-nano", include_str!("../boards/jetson-nano.toml")),
    ("jetson-orin", include_str!("../boards/jetson-orin.toml")),
    ("x86_64", include_str!("../boards/x86_64.toml")),
];

/// Targets a profile may name: the ones this project builds and tests.
pub const TARGETS: &[&str] = &["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf", "x86_64-unknown-linux-gnu"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelVariant {
    Float,
    Int8,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub device: String,
    /// Asked of the driver; what it answers is used.
    pub format: PixelFormat,
    /// `WIDTHxHEIGHT`.
    pub size: String,
    pub fps: f64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    description: String,
    target: String,
    /// qemu's `-cpu` for this board's cores (the tests run under it).
    cpu: String,
    /// tract's kernel family: `TRACT_CPU_AARCH64_KIND` on aarch64 (a53, a55, a72, a73, a75,
    /// neoverse or generic), `neon` on armv7 (sets `TRACT_CPU_ARM32_NEON`), `native` on x86_64
    /// (probed at run time).
    tract_cpu: String,
    threads: usize,
    model: ModelVariant,
    model_reason: String,
    camera: Camera,
    #[serde(default)]
    kiosk: toml::Table,
}

/// A checked profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub target: String,
    pub cpu: String,
    pub tract_cpu: String,
    pub threads: usize,
    pub model: ModelVariant,
    pub model_reason: String,
    pub camera: Camera,
    pub camera_size: (u32, u32),
    /// The profile's `[kiosk]` table, before a configuration file's keys go over it.
    pub kiosk: toml::Table,
}

const AARCH64_KINDS: &[&str] = &["a53", "a55", "a72", "a73", "a75", "neoverse", "generic"];

impl Board {
    /// A bundled profile by name, or a profile file.
    pub fn load(name_or_path: &str) -> Result<Board> {
        if let Some((_, text)) = BUNDLED.iter().find(|(n, _)| *n == name_or_path) {
            return Board::parse(text).with_context(|| format!("board profile {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.components().count() > 1 {
            let text = crate::frame::read_text_file(path, 1 << 20).with_context(|| format!("reading board profile {}", path.display()))?;
            return Board::parse(&text).with_context(|| format!("board profile {}", path.display()));
        }
        let names: Vec<&str> = BUNDLED.iter().map(|b| b.0).collect();
        bail!("no board profile {name_or_path:?}; the bundled ones are {}, or give a FILE.toml", names.join(", "))
    }

    pub fn parse(text: &str) -> Result<Board> {
        let raw: Raw = toml::from_str(text)?;
        let fail = |field: &str, why: String| anyhow::anyhow!("{field}: {why}");
        if raw.name.is_empty() || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(fail("name", format!("{:?} must be letters, digits, - or _", raw.name)));
        }
        if !TARGETS.contains(&raw.target.as_str()) {
            return Err(fail("target", format!("{:?} is not one of {}", raw.target, TARGETS.join(", "))));
        }
        let arch = target_arch(&raw.target);
        let kinds: &[&str] = match arch {
            "aarch64" => AARCH64_KINDS,
            "arm" => &["neon"],
            _ => &["native"],
        };
        if !kinds.contains(&raw.tract_cpu.as_str()) {
            return Err(fail("tract_cpu", format!("{:?} is not one of {} for {}", raw.tract_cpu, kinds.join(", "), raw.target)));
        }
        if raw.threads == 0 || raw.threads > 64 {
            return Err(fail("threads", format!("{} must be 1..=64", raw.threads)));
        }
        if raw.model_reason.trim().is_empty() {
            return Err(fail("model_reason", "say why this board runs this model variant".into()));
        }
        if raw.model == ModelVariant::Int8 && !crate::model::embedded_names().iter().any(|n| n.ends_with("-int8")) {
            return Err(fail("model", "int8: this build has no int8 models; use \"float\"".into()));
        }
        if !raw.camera.device.starts_with("/dev/") {
            return Err(fail("camera.device", format!("{:?} is not a device path", raw.camera.device)));
        }
        let camera_size = crate::config::parse_wxh(&raw.camera.size).map_err(|e| fail("camera.size", format!("{:?}: {e}", raw.camera.size)))?;
        if !(16..=8192).contains(&camera_size.0) || !(16..=8192).contains(&camera_size.1) {
            return Err(fail("camera.size", format!("{:?} must be 16..=8192 each way", raw.camera.size)));
        }
        if !(raw.camera.fps > 0.0 && raw.camera.fps <= 240.0) {
            return Err(fail("camera.fps", format!("{} must be in (0, 240]", raw.camera.fps)));
        }
        let board = Board {
            name: raw.name,
            description: raw.description,
            target: raw.target,
            cpu: raw.cpu,
            tract_cpu: raw.tract_cpu,
            threads: raw.threads,
            model: raw.model,
            model_reason: raw.model_reason,
            camera: raw.camera,
            camera_size,
            kiosk: raw.kiosk,
        };
        board.kiosk_config(None).map_err(|e| e.context("kiosk"))?;
        Ok(board)
    }

    /// The kiosk settings: the profile's `[kiosk]`, with `over`'s keys (a configuration file's
    /// `[kiosk]`) on top, table by table.
    pub fn kiosk_config(&self, over: Option<&toml::Table>) -> Result<KioskConfig> {
        let mut merged = self.kiosk.clone();
        if let Some(over) = over {
            // A relay is one thing: a file's relay replaces the profile's whole.
            if over.contains_key("relay") {
                merged.remove("relay");
            }
            merge(&mut merged, over);
        }
        KioskConfig::from_table(merged)
    }

    /// Refuses a profile for another architecture than this binary's.
    pub fn check_runs_here(&self) -> Result<()> {
        let here = std::env::consts::ARCH;
        if target_arch(&self.target) != here {
            bail!("target: board profile {} is for {}, this binary is built for {here}", self.name, self.target);
        }
        Ok(())
    }

    /// Tells tract which kernels to use, unless the environment already says. Call before any
    /// model is loaded (tract reads these once) and before other threads start.
    pub fn apply_tract_cpu(&self) {
        let (var, value) = match target_arch(&self.target) {
            "aarch64" => ("TRACT_CPU_AARCH64_KIND", self.tract_cpu.as_str()),
            // Under qemu-user or in a container /proc/cpuinfo may not show NEON.
            "arm" => ("TRACT_CPU_ARM32_NEON", "true"),
            _ => return,
        };
        if std::env::var_os(var).is_none() {
            log::info!("board {}: {var}={value}", self.name);
            std::env::set_var(var, value);
        }
    }
}

/// `a` with `b`'s keys over it; tables merge, other values are replaced.
fn merge(a: &mut toml::Table, b: &toml::Table) {
    for (k, v) in b {
        match (a.get_mut(k), v) {
            (Some(toml::Value::Table(at)), toml::Value::Table(bt)) => merge(at, bt),
            _ => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `std::env::consts::ARCH` of a target triple.
fn target_arch(triple: &str) -> &str {
    match triple.split('-').next().unwrap_or_default() {
        a if a.starts_with("armv7") => "arm",
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_is_valid_and_named_as_its_file() {
        for (name, text) in BUNDLED {
            let b = Board::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&b.name, name);
            let k = b.kiosk_config(None).unwrap();
            assert!(k.relay.is_some() || b.target.starts_with("x86_64"), "{name} has a relay line");
        }
        let here = BUNDLED.iter().filter(|(_, t)| Board::parse(t).unwrap().check_runs_here().is_ok()).count();
        assert!(here >= 1, "at least one profile runs on this architecture");
    }

    fn rpi4() -> String {
        BUNDLED[0].1.to_string()
    }

    #[test]
    fn a_bad_profile_is_refused_with_the_field_named() {
        let cases = [
            ("target = \"aarch64-unknown-linux-gnu\"", "target = \"riscv64gc-unknown-linux-gnu\"", "target:"),
            ("tract_cpu = \"a72\"", "tract_cpu = \"a99\"", "tract_cpu:"),
            ("threads = 4", "threads = 0", "threads:"),
            ("size = \"640x480\"", "size = \"640by480\"", "camera.size:"),
            ("fps = 15.0", "fps = -1.0", "camera.fps:"),
            ("format = \"MJPG\"", "format = \"H264\"", "format"),
            ("detector_size = \"320x256\"", "detector_size = \"300x256\"", "detector_size"),
            ("k = 2", "k = 7", "policy.k"),
            ("model = \"float\"", "model = \"fp16\"", "model"),
        ];
        for (from, to, field) in cases {
            let text = rpi4();
            assert!(text.contains(from), "rpi4.toml has {from}");
            let e = Board::parse(&text.replacen(from, to, 1)).expect_err(to);
            assert!(format!("{e:#}").contains(field), "{to}: {e:#}");
        }
        let e = Board::parse(&format!("{}\nfrobs = 1\n", rpi4())).unwrap_err();
        assert!(format!("{e:#}").contains("frobs"), "{e:#}");
    }

    #[test]
    fn the_configuration_file_goes_over_the_profile_key_by_key() {
        let b = Board::parse(&rpi4()).unwrap();
        let over: toml::Table = toml::from_str("[policy]\nmargin = 0.1\n[relay]\nname = \"GPIO27\"\n").unwrap();
        let k = b.kiosk_config(Some(&over)).unwrap();
        assert_eq!(k.policy.margin, 0.1);
        assert_eq!(k.policy.k, b.kiosk_config(None).unwrap().policy.k, "the profile's other policy keys stay");
        assert_eq!(k.relay.unwrap().name.as_deref(), Some("GPIO27"));
        assert_eq!(k.detector_size, "320x256");
    }

    #[test]
    fn unknown_names_list_the_bundled_profiles() {
        let e = Board::load("rpi9").unwrap_err().to_string();
        assert!(e.contains("rpi4") && e.contains("jetson-orin"), "{e}");
        assert!(Board::load("x86_64").is_ok());
    }
}
