/* bcryptprimitives.dll for Wine 8, which lacks it: Rust's std (1.78+) asks it for random
 * bytes through ProcessPrng. This one answers with RtlGenRandom (SystemFunction036), which
 * Wine has. Built with mingw into the test prefix's system32 by .ci/wine/setup. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
