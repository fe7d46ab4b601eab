//! `qemu/NAME.toml`: how to launch QEMU so that it behaves like a board's
//! hardware and firmware.

use crate::error::{read, InputError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuProfile {
    /// `qemu-system-*` binary name.
    pub binary: String,
    pub machine: String,
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_smp")]
    pub smp: u32,
    /// Whether KVM may be tried (only when the host has the same arch; a probe
    /// boot must succeed first, see the builder's `qemu` module).
    #[serde(default)]
    pub kvm: bool,
    /// Network device model for user-mode networking.
    pub net_device: String,
    /// Block device model the disk image is attached as; `sd` puts it in the
    /// machine's SD card slot (`-drive if=sd`, Raspberry Pi).
    #[serde(default = "default_disk_device")]
    pub disk_device: String,
    /// Which serial port is the console (0-based): the earlier ones are
    /// connected to nothing. The Pi 3's firmware console is its mini UART,
    /// QEMU's second port.
    #[serde(default)]
    pub console_serial: u32,
    /// The firmware a disk image boots through.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// Anything else the machine needs, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Kernel arguments this machine model needs and real hardware does not
    /// (raspi3b: `ballast.watchdog=off`). `ballast run` adds them:
    /// on a U-Boot board's disk in the boot partition's `cmdline_extra.txt`,
    /// with `--direct` on the command line.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Attach the network device only once the console prints this text
    /// (raspi3b: U-Boot's `Starting kernel`), through QEMU's monitor. QEMU's
    /// dwc2 model signals a connection only when a device is attached, and
    /// U-Boot consumes that signal, so a device present from the start is
    /// never seen by Linux.
    #[serde(default)]
    pub net_attach_after: Option<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// UEFI as two pflash units (code read-only, a per-disk copy of the variable
/// store), or a `-bios` image such as U-Boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// UEFI code (pflash unit 0, read-only).
    #[serde(default)]
    pub code: Option<PathBuf>,
    /// UEFI variable store template, copied beside the disk on first run.
    #[serde(default)]
    pub vars: Option<PathBuf>,
    /// A `-bios` image (U-Boot).
    #[serde(default)]
    pub bios: Option<PathBuf>,
    /// A build artifact (a key of `build.json`'s `artifacts`, e.g. `u-boot`)
    /// QEMU loads with `-kernel`, where the board's own first stage would load
    /// it from the card (the Raspberry Pi's GPU firmware, which QEMU lacks).
    #[serde(default)]
    pub kernel_artifact: Option<String>,
    /// Load `kernel_artifact` at this address with QEMU's generic loader
    /// instead of `-kernel`, which loads a 32-bit image where a Linux kernel
    /// goes (raspi2b: U-Boot `rpi_2` is linked at 0x8000, where the Pi's
    /// firmware puts it).
    #[serde(default)]
    pub kernel_addr: Option<u64>,
    /// The ARM stub the Pi's GPU firmware puts at address 0, which QEMU's
    /// raspi machines lack when they do not boot a Linux kernel themselves:
    /// without it every core starts at 0 in empty memory. `bcm2836` (Pi 2):
    /// core 0 jumps to 0x8000, the others wait for Linux on their mailbox.
    #[serde(default)]
    pub armstub: Option<Armstub>,
}

/// An ARM stub for `Firmware::armstub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Armstub {
    /// The BCM2836 (Raspberry Pi 2): its local interrupt controller's mailbox 3
    /// is where Linux writes a secondary core's entry point.
    #[serde(rename = "bcm2836")]
    Bcm2836,
}

fn default_disk_device() -> String {
    "virtio-blk-pci".to_owned()
}

fn default_memory() -> u32 {
    1024
}

fn default_smp() -> u32 {
    1
}

impl QemuProfile {
    pub fn find(dir: &Path, name_or_path: &str) -> Result<QemuProfile, InputError> {
        let path = crate::locate(dir, "QEMU profile", name_or_path)?;
        let text = read(&path)?;
        let mut p: QemuProfile =
            toml::from_str(&text).map_err(|e| InputError::from_toml(&path, &text, &e))?;
        p.path = path;
        Ok(p)
    }
}
