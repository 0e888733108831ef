//! Which machine the kernel runs on, from what it can see: the PCI host bridge (q35 and
//! pc have one, microvm has no PCI), the ACPI tables, and the PVH memory map. The kernel
//! prints it at boot (`machine: NAME (...)`), so that a boot on one machine type cannot
//! pass for another.

use core::fmt;
use x86_64::instructions::port::Port;

use crate::{acpi, pvh};

/// What the kernel found.
pub struct Platform {
    /// Vendor and device ID of PCI 00:00.0 (None: no PCI, config reads return all ones).
    pub pci_host: Option<(u16, u16)>,
    /// The ACPI tables (None: no RSDP or no root table).
    pub acpi: Option<acpi::TableList>,
}

/// Reads vendor and device ID of PCI 00:00.0 through configuration mechanism 1.
fn pci_host_bridge() -> Option<(u16, u16)> {
    // SAFETY: ports 0xCF8/0xCFC are the PCI configuration address and data ports; on a
    // machine without PCI nothing decodes them and reads return all ones. Only this
    // function uses them, once, on the BSP before the APs start.
    let id = unsafe {
        Port::<u32>::new(0xCF8).write(0x8000_0000);
        let id = Port::<u32>::new(0xCFC).read();
        Port::<u32>::new(0xCF8).write(0);
        id
    };
    let (vendor, device) = (id as u16, (id >> 16) as u16);
    if vendor == 0xFFFF || vendor == 0 {
        None
    } else {
        Some((vendor, device))
    }
}

/// Looks at the machine.
pub fn probe(info: &pvh::BootInfo) -> Platform {
    Platform {
        pci_host: pci_host_bridge(),
        acpi: acpi::tables(info.rsdp).ok(),
    }
}

impl Platform {
    /// The QEMU machine type this looks like: `q35` (Q35/ICH9 host bridge 8086:29c0),
    /// `pc` (i440FX, 8086:1237), `microvm` (no PCI at all, and hardware-reduced ACPI or no
    /// ACPI), otherwise `unknown`.
    pub fn name(&self) -> &'static str {
        match self.pci_host {
            Some((0x8086, 0x29C0)) => "q35",
            Some((0x8086, 0x1237)) => "pc",
            Some(_) => "unknown",
            None => match &self.acpi {
                None => "microvm",
                Some(t) if t.hw_reduced == Some(true) => "microvm",
                Some(_) => "unknown",
            },
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (PCI host bridge ", self.name())?;
        match self.pci_host {
            Some((v, d)) => write!(f, "{v:04x}:{d:04x}")?,
            None => write!(f, "none")?,
        }
        write!(f, "; ACPI")?;
        match &self.acpi {
            None => write!(f, " none")?,
            Some(t) => {
                for sig in &t.sigs[..t.count] {
                    write!(f, " {}", core::str::from_utf8(sig).unwrap_or("????"))?;
                }
                match t.hw_reduced {
                    Some(true) => write!(f, ", hardware-reduced")?,
                    Some(false) => write!(f, ", full")?,
                    None => write!(f, ", no FADT")?,
                }
            }
        }
        write!(f, ")")
    }
}

/// The memory map, one `address+size:type` per entry, for the boot log.
pub struct MemoryMap<'a>(pub &'a pvh::BootInfo);

impl fmt::Display for MemoryMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries:", self.0.map_entries)?;
        for e in self.0.map() {
            write!(f, " {:#x}+{:#x}:{}", e.addr, e.size, e.kind)?;
        }
        if self.0.map().len() < self.0.map_entries {
            write!(f, " ...")?;
        }
        Ok(())
    }
}
