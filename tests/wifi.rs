//! Story (issue 16): a Wi-Fi network configured the way cloud-init and netplan
//! read it (network-config v2 `wifis:` with an SSID and a WPA2 password) gets
//! an address. QEMU has no Wi-Fi card, so the kernel's simulated radios
//! (`mac80211_hwsim`, Debian's module, loaded by stage 1 from the image's
//! `[kernel] modules`, with the ciphers mac80211 needs for WPA2; a Pi's
//! brcmfmac does its crypto in the radio's firmware) stand in: it makes two radios in one kernel that hear
//! each other. The network container joins the network on `wlan0` with
//! wpa_supplicant, as it would on a Pi; the access point is the other radio,
//! `wlan1`, run from an SSH session in a network namespace of its own:
//! Debian's hostapd (WPA2-PSK/CCMP) and busybox's udhcpd. The story checks
//! what a user would: `wlan0` is associated (`iw dev wlan0 link`; hostapd
//! lists the station as authorized), holds a lease from the access point's
//! DHCP server, which lists wlan0's MAC, and pings cross the air both ways.
//! Then, in the same boot, the access point turns WPA3-only (SAE) under the
//! config's second SSID, and wlan0 joins it too.
//!
//! Run: `cargo test -p ballast --test wifi -- --nocapture` (qemu-arm64 under
//! TCG: one build of the minimal image with the simulated radios, one boot).

mod common;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::vm::{free_port, Machine, Ssh};

const BOARD: &str = "qemu-arm64";
const SSID: &str = "ballast story";
const PASSWORD: &str = "not-a-real-secret-42";
/// The second network: WPA3 personal (SAE), listed after the first, so
/// wpa_supplicant prefers the WPA2 one while both are on the air.
const SSID_WPA3: &str = "ballast story wpa3";

/// network-config v2, as netplan's documentation writes it: Ethernet for the
/// SSH port, Wi-Fi by SSID and password.
fn network_config() -> String {
    format!(
        r#"network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
  wifis:
    wlan0:
      dhcp4: true
      access-points:
        "{SSID}":
          password: "{PASSWORD}"
        "{SSID_WPA3}":
          auth:
            key-management: sae
            password: "{PASSWORD}"
"#
    )
}

/// The access point on the second simulated radio, `wlan1`: Debian's hostapd
/// (WPA2-PSK, CCMP, channel 6) and busybox's udhcpd (192.168.77.1, leases from
/// .100). Its radio is moved first into a network namespace of its own
/// (`iw phy ... set netns`), so the ping between the two crosses the
/// simulated air instead of the host's loopback, as between two machines.
fn access_point_script() -> String {
    format!(
        r#"set -e
mkdir -p /run/story-ap
cat > /run/story-ap/hostapd.conf <<'EOF'
interface=wlan1
driver=nl80211
ctrl_interface=/run/story-ap/ctrl
ssid={SSID}
hw_mode=g
channel=6
wpa=2
wpa_key_mgmt=WPA-PSK
rsn_pairwise=CCMP
wpa_passphrase={PASSWORD}
EOF
cat > /run/story-ap/udhcpd.conf <<'EOF'
start 192.168.77.100
end 192.168.77.150
interface wlan1
lease_file /run/story-ap/leases
option subnet 255.255.255.0
auto_time 1
EOF
touch /run/story-ap/leases
phy=$(cat /sys/class/net/wlan1/phy80211/name)
ip netns add ap
iw phy "$phy" set netns name ap
ip netns exec ap ip link set lo up
ip netns exec ap ip link set wlan1 up
ip netns exec ap ip addr add 192.168.77.1/24 dev wlan1
ip netns exec ap hostapd -B -t -f /run/story-ap/ap.log -P /run/story-ap/hostapd.pid /run/story-ap/hostapd.conf
ip netns exec ap busybox udhcpd /run/story-ap/udhcpd.conf
echo ap-started
"#
    )
}

/// The second case: the WPA2 access point goes off the air and the same
/// radio comes back as a WPA3-only one (SAE, protected management frames
/// required) with its own SSID; the DHCP server keeps running.
fn wpa3_access_point_script() -> String {
    format!(
        r#"set -e
kill "$(cat /run/story-ap/hostapd.pid)"
# Gone when its control socket is (a daemon nobody reaps stays a zombie,
# which `kill -0` still finds).
while [ -e /run/story-ap/ctrl/wlan1 ]; do sleep 1; done
cat > /run/story-ap/hostapd-wpa3.conf <<'EOF'
interface=wlan1
driver=nl80211
ctrl_interface=/run/story-ap/ctrl
ssid={SSID_WPA3}
hw_mode=g
channel=6
wpa=2
wpa_key_mgmt=SAE
ieee80211w=2
rsn_pairwise=CCMP
sae_password={PASSWORD}
EOF
ip netns exec ap hostapd -B -t -f /run/story-ap/ap-wpa3.log -P /run/story-ap/hostapd.pid /run/story-ap/hostapd-wpa3.conf
echo wpa3-started
"#
    )
}

/// The minimal image, plus the simulated radios loaded by stage 1.
fn wifi_image() -> std::path::PathBuf {
    let minimal = std::fs::read_to_string(common::root().join("images/minimal.toml"))
        .expect("reading images/minimal.toml");
    let text = minimal.replace(
        "[kernel]\ncmdline = []\n",
        "[kernel]\ncmdline = []\n# Two simulated radios (the module's default) that hear each other, and\n# the ciphers mac80211 asks the crypto API for when WPA2 installs its keys\n# (CCMP is ccm(aes) over ctr; BIP is cmac): with no modprobe helper on\n# the device, nothing would load them on demand.\nmodules = [\"mac80211_hwsim\", \"ctr\", \"ccm\", \"cmac\"]\n",
    );
    // wpa_supplicant: the Pi boards list it, qemu-arm64 does not. hostapd is
    // the story's access point and iw moves its radio and shows the link:
    // only this image carries them.
    let text = text.replace(
        "[debian]\n",
        "[debian]\npackages = [\"wpasupplicant\", \"hostapd\", \"iw\"]\n",
    );
    assert!(
        text.contains("mac80211_hwsim") && text.contains("hostapd"),
        "images/minimal.toml changed shape: {minimal}"
    );
    let dir = common::root().join("target").join("e2e");
    std::fs::create_dir_all(&dir).expect("creating target/e2e");
    let path = dir.join("wifi-image.toml");
    std::fs::write(&path, text).expect("writing the Wi-Fi image file");
    path
}

/// Run `command` every 2 s until its output contains `needle`; that output.
fn poll(ssh: &Ssh, command: &str, needle: &str, seconds: u64) -> String {
    let start = Instant::now();
    loop {
        let out = ssh.run(command);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(needle) {
            return text;
        }
        if start.elapsed() > Duration::from_secs(seconds) {
            let logs = ssh.run(
                "osctl logs network -n 100; sudo cat /run/story-ap/ap.log /run/story-ap/ap-wpa3.log",
            );
            panic!(
                "no {needle:?} in `{command}` after {seconds} s: {text}\n{}",
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn qemu_arm64_wifis_network_config_joins_a_wpa2_network_and_gets_an_address() {
    let _story = common::story();
    let started = Instant::now();
    let work = common::workdir("wifi");
    let image = wifi_image();
    let built = common::Build::new(BOARD)
        .ssh_key()
        .args(&["--image", image.to_str().expect("utf-8 path")])
        .shared();
    let (ud, md, nc) = (
        work.join("user-data"),
        work.join("meta-data"),
        work.join("network-config"),
    );
    std::fs::write(&ud, "#cloud-config\nhostname: wifi1\n").expect("writing user-data");
    std::fs::write(&md, "instance-id: iid-wifi-1\n").expect("writing meta-data");
    std::fs::write(&nc, network_config()).expect("writing network-config");
    let seed = common::seed_image(
        &ud,
        &md,
        &[OsStr::new("--network-config"), nc.as_os_str()],
        &work.join("seed.img"),
    );
    let disk = built.vm_disk(&work, "wifi");
    let port = free_port();
    let mut vm = Machine::start_with(
        BOARD,
        &built.out,
        port,
        work.join("console.log"),
        false,
        &[disk.as_os_str(), OsStr::new("--seed"), seed.as_os_str()],
    );
    vm.wait_for("ballast-ready", Duration::from_secs(900));
    let ready = vm.since_start();
    let ssh = Ssh {
        key: built.ssh_key(),
        port,
    };
    // The network container started wpa_supplicant on wlan0 from the config.
    let logs = poll(
        &ssh,
        "osctl logs network -n 200",
        "network: Wi-Fi on wlan0",
        120,
    );
    assert!(
        logs.contains("/run/ballast/wpa_supplicant-wlan0.conf"),
        "{logs}"
    );
    // wlan0 has no address yet: there is nothing to join.
    let before = ssh.ok("ip -4 -o addr show dev wlan0");
    assert!(!before.contains("192.168.77."), "{before}");

    let out = ssh.ok_with_input("sudo sh -s", access_point_script().as_bytes());
    assert!(out.contains("ap-started"), "{out}");
    let ap_up = Instant::now();

    // wpa_supplicant associates (the 4-way handshake proves the password) and
    // udhcpc, retrying since boot, gets a lease over the simulated air.
    poll(
        &ssh,
        "ip -4 -o addr show dev wlan0",
        "inet 192.168.77.",
        300,
    );
    let joined = ap_up.elapsed();
    let logs = ssh.ok("osctl logs network -n 200");
    assert!(
        logs.lines()
            .any(|l| l.contains("network: wlan0 192.168.77.") && l.contains("(bound)")),
        "{logs}"
    );
    let addr = ssh.ok("ip -4 -o addr show dev wlan0");
    assert!(addr.contains("inet 192.168.77.1"), "{addr}");
    let state = ssh.ok("cat /sys/class/net/wlan0/operstate /sys/class/net/wlan0/address");
    let mut words = state.split_whitespace();
    assert_eq!(words.next(), Some("up"), "wlan0 is not associated: {state}");
    let mac = words.next().expect("wlan0's MAC").to_string();
    // The access point's DHCP server gave that lease to wlan0's MAC.
    // (udhcpd writes its lease file every second: `auto_time 1`.)
    poll(
        &ssh,
        "sudo busybox dumpleases -f /run/story-ap/leases",
        &mac.to_ascii_lowercase(),
        60,
    );
    // Associated, as `iw` shows it on the station and hostapd on the access
    // point: the station is authorized (the 4-way handshake completed).
    let link = ssh.ok("sudo iw dev wlan0 link");
    assert!(
        link.contains("Connected to") && link.contains(&format!("SSID: {SSID}")),
        "{link}"
    );
    let stations = ssh.ok("sudo hostapd_cli -p /run/story-ap/ctrl all_sta");
    assert!(
        stations.contains(&mac.to_ascii_lowercase()) && stations.contains("[AUTHORIZED]"),
        "hostapd does not list wlan0 ({mac}) as authorized: {stations}"
    );
    // A ping across the air, both ways: the access point's radio is in a
    // network namespace of its own, so neither address is local to the other.
    let lease = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("wlan0's address")
        .to_string();
    for (from, to) in [("", "192.168.77.1"), ("ip netns exec ap ", lease.as_str())] {
        let out = ssh.ok(&format!("sudo {from}busybox ping -c 3 -W 5 {to}"));
        assert!(out.contains("3 packets received"), "{from}ping {to}: {out}");
    }
    // WPA3: wlan0 loses the WPA2 network and joins the SAE one, which its
    // config lists second; hostapd, allowing only SAE, authorizes it, and
    // the address still reaches the access point.
    let out = ssh.ok_with_input("sudo sh -s", wpa3_access_point_script().as_bytes());
    assert!(out.contains("wpa3-started"), "{out}");
    let wpa3_up = Instant::now();
    poll(
        &ssh,
        "sudo iw dev wlan0 link",
        &format!("SSID: {SSID_WPA3}"),
        240,
    );
    let roamed = wpa3_up.elapsed();
    let stations = ssh.ok("sudo hostapd_cli -p /run/story-ap/ctrl all_sta");
    assert!(
        stations.contains(&mac.to_ascii_lowercase()) && stations.contains("[AUTHORIZED]"),
        "the WPA3 access point does not list wlan0 ({mac}) as authorized: {stations}"
    );
    let out = ssh.ok("sudo busybox ping -c 3 -W 5 192.168.77.1");
    assert!(out.contains("3 packets received"), "WPA3 ping: {out}");
    // The password is only in the root-only wpa_supplicant config.
    let mode = ssh.ok("sudo stat -c %a /run/ballast/wpa_supplicant-wlan0.conf");
    assert_eq!(mode.trim(), "600");
    vm.save();
    eprintln!(
        "wifi story: ready {:.0} s after QEMU started; joined and leased {:.1} s after the access point came up; joined the WPA3 one {:.1} s after it came up; {:.0} s in all",
        ready.as_secs_f64(),
        joined.as_secs_f64(),
        roamed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
