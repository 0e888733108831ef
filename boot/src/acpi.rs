//! Just enough ACPI to count the CPUs (RSDP → XSDT/RSDT → MADT → local APIC entries) and
//! to say which tables the machine has.

/// LAPIC IDs of the enabled CPUs, from the MADT.
pub struct CpuList {
    pub ids: [u32; 64],
    pub count: usize,
}

fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: only called on addresses inside ACPI tables found through the RSDP that the
    // PVH start info gave; they lie in identity-mapped low memory. Unaligned reads are
    // allowed by read_unaligned.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

fn checksum_ok(addr: u64, len: usize) -> bool {
    (0..len as u64).fold(0u8, |s, i| s.wrapping_add(read::<u8>(addr + i))) == 0
}

/// The root table (XSDT or RSDT) the RSDP points at: its address and entry size.
fn root(rsdp: u64) -> Result<(u64, u64), &'static str> {
    if rsdp == 0 || rsdp >= 0x1_0000_0000 {
        return Err("no RSDP");
    }
    if &read::<[u8; 8]>(rsdp) != b"RSD PTR " || !checksum_ok(rsdp, 20) {
        return Err("bad RSDP");
    }
    let revision = read::<u8>(rsdp + 15);
    let (root, entry_size) = if revision >= 2 && read::<u64>(rsdp + 24) != 0 {
        (read::<u64>(rsdp + 24), 8)
    } else {
        (read::<u32>(rsdp + 16) as u64, 4)
    };
    if root == 0 || root >= 0x1_0000_0000 {
        return Err("no RSDT/XSDT");
    }
    Ok((root, entry_size))
}

/// Calls `f(address, signature)` for every table the root table lists (below 4 GiB).
fn for_each_table(rsdp: u64, mut f: impl FnMut(u64, [u8; 4])) -> Result<(), &'static str> {
    let (root, entry_size) = root(rsdp)?;
    let root_len = read::<u32>(root + 4) as u64;
    let n = (root_len.saturating_sub(36)) / entry_size;
    for i in 0..n {
        let at = root + 36 + i * entry_size;
        let table = if entry_size == 8 {
            read::<u64>(at)
        } else {
            read::<u32>(at) as u64
        };
        if table == 0 || table >= 0x1_0000_0000 {
            continue;
        }
        f(table, read::<[u8; 4]>(table));
    }
    Ok(())
}

/// The signatures of the tables the RSDT/XSDT lists, in its order.
pub struct TableList {
    pub sigs: [[u8; 4]; 16],
    pub count: usize,
    /// The FADT's "hardware-reduced ACPI" flag (bit 20 of its flags), if there is a FADT.
    pub hw_reduced: Option<bool>,
}

/// Lists the ACPI tables (`Err` when there is no ACPI).
pub fn tables(rsdp: u64) -> Result<TableList, &'static str> {
    let mut list = TableList {
        sigs: [[0; 4]; 16],
        count: 0,
        hw_reduced: None,
    };
    for_each_table(rsdp, |addr, sig| {
        if &sig == b"FACP" && read::<u32>(addr + 4) >= 116 {
            list.hw_reduced = Some(read::<u32>(addr + 112) & (1 << 20) != 0);
        }
        if list.count < list.sigs.len() {
            list.sigs[list.count] = sig;
            list.count += 1;
        }
    })?;
    Ok(list)
}

/// Finds the MADT and lists the enabled (or online-capable) local APICs.
pub fn cpus(rsdp: u64) -> Result<CpuList, &'static str> {
    let mut madt = 0;
    for_each_table(rsdp, |addr, sig| {
        if madt == 0 && &sig == b"APIC" {
            madt = addr;
        }
    })?;
    if madt == 0 {
        return Err("no MADT");
    }
    let table = madt;
    let len = read::<u32>(table + 4) as u64;
    let mut list = CpuList {
        ids: [0; 64],
        count: 0,
    };
    let mut p = table + 44;
    while p + 2 <= table + len {
        let kind = read::<u8>(p);
        let elen = read::<u8>(p + 1) as u64;
        if elen < 2 {
            break;
        }
        if kind == 0 && elen >= 8 {
            let apic_id = read::<u8>(p + 3) as u32;
            let flags = read::<u32>(p + 4);
            if flags & 0b11 != 0 && list.count < list.ids.len() {
                list.ids[list.count] = apic_id;
                list.count += 1;
            }
        }
        p += elen;
    }
    Ok(list)
}
