//! The ARM stub a Raspberry Pi's GPU firmware puts at address 0 before it
//! starts the ARM cores, for QEMU's raspi machines, which have no GPU
//! firmware (`[firmware] armstub` in a QEMU profile). QEMU brings its own
//! stub only when it boots a Linux kernel itself; a board U-Boot loaded at
//! its link address needs the firmware's: without it all four cores start at
//! 0 in empty memory and run into U-Boot together.
//!
//! The BCM2836 stub does what the firmware's `armstub7` does: core 0 jumps to
//! 0x8000 (where the firmware loads the 32-bit `kernel=` file, here U-Boot)
//! with r0 = 0, r1 = 0 (no machine type: U-Boot uses its own device tree) and
//! r2 = 0 (no firmware device tree); cores 1 to 3 sleep until Linux writes
//! their entry point to their mailbox 3 (the local interrupt controller at
//! 0x4000_0000, read-and-clear register 0x4000_00CC + 16 × core) and sends
//! an event, then clear it and jump there. The Pi's device tree reserves the
//! first page (`/memreserve/ 0 0x1000`), so the stub outlives the kernel's
//! start while the secondary cores still run it.

use ballast_inputs::Armstub;

/// The BCM2836 stub, one ARM (A32) instruction per word, little-endian.
const BCM2836: [u32; 19] = [
    0xee10_0fb0, // 00: mrc   p15, 0, r0, c0, c0, 5   @ MPIDR
    0xe210_0003, // 04: ands  r0, r0, #3              @ core number
    0x1a00_0005, // 08: bne   0x24                    @ cores 1-3: wait
    0xe3a0_0000, // 0c: mov   r0, #0
    0xe3a0_1000, // 10: mov   r1, #0
    0xe3a0_2000, // 14: mov   r2, #0
    0xe3a0_f902, // 18: mov   pc, #0x8000             @ core 0: U-Boot
    0xe1a0_0000, // 1c: nop
    0xe1a0_0000, // 20: nop
    0xe59f_401c, // 24: ldr   r4, [pc, #28]           @ = 0x400000cc
    0xe084_4200, // 28: add   r4, r4, r0, lsl #4      @ this core's mailbox 3
    0xe320_f002, // 2c: wfe
    0xe594_3000, // 30: ldr   r3, [r4]
    0xe353_0000, // 34: cmp   r3, #0
    0x0aff_fffb, // 38: beq   0x2c
    0xe584_3000, // 3c: str   r3, [r4]                @ clear it
    0xe12f_ff13, // 40: bx    r3                      @ Linux's entry point
    0xe1a0_0000, // 44: nop
    0x4000_00cc, // 48: mailbox 3 read-and-clear, core 0
];

/// The stub's bytes, to load at address 0.
pub fn image(stub: Armstub) -> Vec<u8> {
    match stub {
        Armstub::Bcm2836 => BCM2836.iter().flat_map(|w| w.to_le_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branches land where the comments say (A32: target = pc + 8 + 4 × imm24).
    #[test]
    fn branches_and_literal_are_where_the_comments_say() {
        let target = |at: usize| {
            let imm = (BCM2836[at / 4] & 0x00ff_ffff) as i32;
            let imm = (imm << 8) >> 8; // sign-extend 24 bits
            (at as i32 + 8 + 4 * imm) as usize
        };
        assert_eq!(target(0x08), 0x24);
        assert_eq!(target(0x38), 0x2c);
        // ldr r4, [pc, #28] at 0x24 reads 0x24 + 8 + 28.
        assert_eq!(0x24 + 8 + (BCM2836[0x24 / 4] & 0xfff) as usize, 0x48);
        assert_eq!(BCM2836[0x48 / 4], 0x4000_00cc);
        assert_eq!(image(Armstub::Bcm2836).len(), 19 * 4);
    }
}
