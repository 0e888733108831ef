/* Wine 8.0 has no bcryptprimitives.dll, which Rust's standard library imports since 1.78
 * for ProcessPrng: every Rust program for Windows fails to start under it ("Library
 * bcryptprimitives.dll ... not found"). This DLL gives ProcessPrng through advapi32's
 * RtlGenRandom (SystemFunction036), which Wine has. scripts/wine-runner.sh builds it into
 * the Wine prefix; on real Windows the system's own DLL is used. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
