use super::*;
use crate::stage1::boot;
use crate::state::STATE_MOUNT;
use crate::sys::Shutdown;
use crate::testsys::{position, Action, TestSys};
use std::collections::VecDeque;

/// A scripted network: configure and fetch answers in order, then success.
#[derive(Default)]
struct FakeNet {
    configure: VecDeque<Result<String, String>>,
    dhcp: VecDeque<Result<(String, IpConfig), String>>,
    leased: u32,
    fetch: VecDeque<Result<u64, FetchError>>,
    verify: Option<String>,
    fetched: u32,
    verified: bool,
}

impl Net for FakeNet {
    fn configure(&mut self, _cfg: &IpConfig) -> Result<String, String> {
        self.configure
            .pop_front()
            .unwrap_or_else(|| Ok("eth0".into()))
    }
    fn dhcp(&mut self) -> Result<(String, IpConfig), String> {
        self.leased += 1;
        self.dhcp.pop_front().unwrap_or_else(|| {
            Ok((
                "eth0".into(),
                IpConfig::parse("10.0.2.15,255.255.255.0,10.0.2.2").unwrap(),
            ))
        })
    }
    fn fetch(
        &mut self,
        _url: &HttpUrl,
        _dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, FetchError> {
        self.fetched += 1;
        let r = self.fetch.pop_front().unwrap_or(Ok(8 << 20));
        if let Ok(n) = r {
            progress(n / 2, n);
            progress(n, n);
        }
        r
    }
    fn verify(&mut self, _image: &Path, _v: &ballast_verity::Verity) -> Result<(), String> {
        self.verified = true;
        self.verify.clone().map_or(Ok(()), Err)
    }
}

fn verity() -> ballast_verity::Verity {
    ballast_verity::Verity {
        root_hash: [0xab; 32],
        salt: vec![0x12; 32],
        data_blocks: 2048,
        data_block_size: 4096,
        hash_block_size: 4096,
        hash_offset: 2048 * 4096,
        uuid: [0; 16],
    }
}

fn machine() -> (TestSys, Cmdline) {
    let line = format!(
        "console=ttyS0 {} ballast.root=http://10.0.2.2:8080/root.img ballast.root.ip=10.0.2.15,255.255.255.0,10.0.2.2,52:54:00:12:34:56",
        verity().to_cmdline()
    );
    let mut sys = TestSys::booted_with(&line);
    sys.file("/sysroot/sbin/init", "\x7fELF");
    (sys, Cmdline::parse(&line))
}

fn mounts(sys: &TestSys) -> Vec<(String, String)> {
    sys.actions
        .iter()
        .filter_map(|a| match a {
            Action::Mount { fstype, target } => Some((fstype.clone(), target.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn ip_config_from_ipxe() {
    assert_eq!(
        IpConfig::parse("10.0.2.15,255.255.255.0,10.0.2.2,52:54:00:AB:CD:EF"),
        Ok(IpConfig {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            mac: Some("52:54:00:ab:cd:ef".into()),
        })
    );
    // iPXE leaves an unknown gateway empty.
    let c = IpConfig::parse("192.168.1.9,255.255.0.0,,").unwrap();
    assert_eq!(c.gateway, None);
    assert_eq!(c.mac, None);
    let e = IpConfig::parse("${net0/ip},").unwrap_err();
    assert!(
        e.contains("bad address") && e.contains("ballast.root.ip="),
        "{e}"
    );
}

#[test]
fn a_network_boot_waits_for_the_nic_retries_the_server_verifies_and_keeps_state_in_ram() {
    let (mut sys, cmdline) = machine();
    let mut net = FakeNet::default();
    net.configure.push_back(Err("no network interface".into()));
    net.fetch.push_back(Err(FetchError::Connect {
        addr: "10.0.2.2:8080".into(),
        err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    }));
    net.fetch
        .push_back(Err(FetchError::Truncated { got: 5, want: 10 }));
    assert_eq!(boot_net(&mut sys, &mut net, &cmdline), Ending::SwitchedRoot);
    assert_eq!(net.fetched, 3);
    assert!(net.verified);
    let messages = sys.messages();
    let has = |s: &str| messages.iter().any(|m| m.contains(s));
    assert!(
        has("netboot: cannot configure the network yet: no network interface"),
        "{messages:?}"
    );
    assert!(
        has("netboot: eth0 is 10.0.2.15/255.255.255.0 via 10.0.2.2"),
        "{messages:?}"
    );
    assert!(has("cannot fetch the root from http://10.0.2.2:8080/root.img: cannot connect to 10.0.2.2:8080"), "{messages:?}");
    assert!(
        has("truncated: the connection ended after 5 of 10 bytes; retrying in 2 s"),
        "{messages:?}"
    );
    assert!(has("netboot: 8.0 of 8.0 MiB (100 %)"), "{messages:?}");
    assert!(sys.actions.contains(&Action::Loop(ROOT_FILE.into())));
    let m = mounts(&sys);
    assert!(m.contains(&("squashfs".into(), "/sysroot".into())), "{m:?}");
    assert!(m.contains(&("tmpfs".into(), STATE_MOUNT.into())), "{m:?}");
    assert!(!m.iter().any(|(f, _)| f == "ext4" || f == "vfat"), "{m:?}");
}

#[test]
fn the_boot_media_modules_load_beside_the_lease_and_the_fetch_and_before_the_loop_device() {
    let (mut sys, cmdline) = machine();
    sys.files.insert(
        PathBuf::from(crate::modules::MODULES_LOAD),
        format!(
            "# kver={}\n# wave 0\nkernel/drivers/net/virtio_net.ko\n# beside\n\
             # wave 0\nkernel/drivers/block/loop.ko\n",
            sys.release
        )
        .into_bytes(),
    );
    assert_eq!(
        crate::stage1::load_modules(&mut sys).map(|r| r.loaded).ok(),
        Some(1)
    );
    let mut net = FakeNet::default();
    assert_eq!(boot_net(&mut sys, &mut net, &cmdline), Ending::SwitchedRoot);
    let actions: Vec<&Action> = sys.actions.iter().collect();
    let at = |want: &dyn Fn(&Action) -> bool| position(&actions, want);
    let begun = at(&|a| *a == Action::BeginModules(1));
    let fetched = at(&|a| matches!(a, Action::Console(m) if m.contains("netboot: root image: ")));
    let verified =
        at(&|a| matches!(a, Action::Console(m) if m.contains("every block of the root matches")));
    let loop_ko = at(&|a| matches!(a, Action::Module(m) if m.ends_with("loop.ko")));
    let attached = at(&|a| *a == Action::Loop(ROOT_FILE.into()));
    assert!(
        begun < fetched && verified < loop_ko && loop_ko < attached,
        "{actions:?}"
    );
}

#[test]
fn a_root_that_does_not_match_its_hash_is_refused_and_never_mounted() {
    let (mut sys, cmdline) = machine();
    let mut net = FakeNet {
        verify: Some("data block 17 does not match its hash".into()),
        ..FakeNet::default()
    };
    assert_eq!(
        boot_net(&mut sys, &mut net, &cmdline),
        Ending::Shutdown(Shutdown::Reboot)
    );
    assert!(sys.messages().iter().any(|m| m.starts_with(
        "root slot net refused: network root: the root image from http://10.0.2.2:8080/root.img does not match the root hash abab"
    ) && m.contains("data block 17")), "{:?}", sys.messages());
    assert!(!sys
        .actions
        .iter()
        .any(|a| matches!(a, Action::Loop(_) | Action::Dm(_))));
    assert!(mounts(&sys).iter().all(|(_, t)| t != "/sysroot"));
}

#[test]
fn stage_1_sends_ballast_root_to_the_network_boot() {
    // The real network would wait for a NIC forever; a root without its
    // hash is refused before that.
    let mut sys = TestSys::booted_with("console=ttyS0 ballast.root=http://10.0.2.2/root.img");
    assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
    assert!(
        sys.messages()
            .iter()
            .any(|m| m
                .starts_with("root slot net refused: kernel command line has no ballast.verity=")),
        "{:?}",
        sys.messages()
    );
}

#[test]
fn without_an_address_stage_1_leases_one_by_dhcp_until_it_gets_one() {
    let line = format!(
        "console=ttyS0 {} ballast.root=http://10.0.2.2:8080/root.img",
        verity().to_cmdline()
    );
    let mut sys = TestSys::booted_with(&line);
    sys.file("/sysroot/sbin/init", "\x7fELF");
    let mut net = FakeNet::default();
    net.dhcp
        .push_back(Err("eth0: no DHCP offer after 4 DISCOVERs".into()));
    assert_eq!(
        boot_net(&mut sys, &mut net, &Cmdline::parse(&line)),
        Ending::SwitchedRoot
    );
    assert_eq!(net.leased, 2);
    assert_eq!(net.fetched, 1);
    let messages = sys.messages();
    let has = |s: &str| messages.iter().any(|m| m.contains(s));
    assert!(
        has("netboot: no ballast.root.ip=; asking DHCP"),
        "{messages:?}"
    );
    assert!(
        has("netboot: no DHCP lease yet: eth0: no DHCP offer after 4 DISCOVERs; retrying"),
        "{messages:?}"
    );
    assert!(
        has("netboot: eth0 is 10.0.2.15/255.255.255.0 via 10.0.2.2 (DHCP)"),
        "{messages:?}"
    );
}

/// A file standing in for a block device holding ext4 labelled `label`.
fn ext4_device(sys: &mut TestSys, dev: &str, label: &str) {
    let mut bytes = vec![0u8; 4096];
    bytes[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
    bytes[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label.as_bytes());
    sys.files.insert(dev.into(), bytes);
}

fn one_partition() -> crate::sys::PartTable {
    crate::sys::PartTable {
        disk_guid: "00000000-0000-0000-0000-000000000001".into(),
        signature_only: false,
        partitions: vec![crate::sys::PartInfo {
            index: 1,
            start_lba: 2048,
            end_lba: 100_000,
        }],
    }
}

#[test]
fn a_local_partition_labelled_ballast_state_keeps_the_state() {
    let (mut sys, cmdline) = machine();
    // vda: an installed Ballast disk (its own state is labelled `state`);
    // vdb1: the diskless machine's state partition.
    sys.block_devices = vec![("vda".into(), 0), ("vdb".into(), 0), ("loop0".into(), 0)];
    sys.tables.insert("/dev/vda".into(), one_partition());
    ext4_device(&mut sys, "/dev/vda1", "state");
    sys.tables.insert("/dev/vdb".into(), one_partition());
    ext4_device(&mut sys, "/dev/vdb1", "ballast-state");
    let mut net = FakeNet::default();
    assert_eq!(boot_net(&mut sys, &mut net, &cmdline), Ending::SwitchedRoot);
    let m = mounts(&sys);
    assert!(m.contains(&("ext4".into(), STATE_MOUNT.into())), "{m:?}");
    assert!(
        m.contains(&("overlay".into(), "/sysroot/etc".into())),
        "{m:?}"
    );
    assert!(!m.contains(&("tmpfs".into(), STATE_MOUNT.into())), "{m:?}");
    assert!(
        sys.messages()
            .iter()
            .any(|l| l.contains("netboot: state on /dev/vdb1 (ext4 labelled ballast-state)")),
        "{:?}",
        sys.messages()
    );
    assert_eq!(
        state::find(&mut sys),
        Some(std::path::PathBuf::from("/dev/vdb1"))
    );
}

#[test]
fn without_a_ballast_state_partition_or_when_it_cannot_be_mounted_the_state_is_in_ram() {
    // A whole disk labelled otherwise: RAM.
    let (mut sys, cmdline) = machine();
    sys.block_devices = vec![("sda".into(), 0)];
    ext4_device(&mut sys, "/dev/sda", "data");
    assert_eq!(
        boot_net(&mut sys, &mut FakeNet::default(), &cmdline),
        Ending::SwitchedRoot
    );
    let m = mounts(&sys);
    assert!(m.contains(&("tmpfs".into(), STATE_MOUNT.into())), "{m:?}");
    assert!(!m.iter().any(|(f, _)| f == "ext4"), "{m:?}");

    // A whole disk labelled ballast-state that will not mount.
    let (mut sys, cmdline) = machine();
    sys.block_devices = vec![("sda".into(), 0)];
    ext4_device(&mut sys, "/dev/sda", "ballast-state");
    sys.mount_errors
        .insert(STATE_MOUNT.to_string(), rustix::io::Errno::INVAL);
    assert_eq!(
        boot_net(&mut sys, &mut FakeNet::default(), &cmdline),
        Ending::SwitchedRoot
    );
    assert!(
        sys.messages().iter().any(|l| l.contains(
            "netboot: cannot mount /dev/sda (ext4 labelled ballast-state) on /sysroot/state"
        ) && l.contains("the state stays in RAM")),
        "{:?}",
        sys.messages()
    );
    assert_eq!(crate::ext4::label(&[0u8; 1024]), None);
}
