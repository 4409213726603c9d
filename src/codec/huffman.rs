//! Order-0 canonical Huffman coding of bytes in four streams, used by `byteplane`.
//!
//! Why Huffman and four streams: decoding is the hot path. The symbols are cut into four
//! contiguous segments, each coded as its own bit stream, so four independent decode chains run
//! side by side in the CPU; and the decoder looks up 12 bits at a time in a table whose entries
//! hold up to four whole symbols (about three per lookup for byteplane's symbols). rANS codes
//! closer to the entropy but needs a multiply and a renormalization test per symbol, which made
//! it three times slower here; byteplane makes up the difference by coding the exponent jointly
//! with the top mantissa bits (see byteplane.rs).
//!
//! Codes are at most [`MAX_LEN`] = 12 bits; each stream is LSB-first with bit-reversed codes.
//! Exact layout: formats-spec/codecs.md §byteplane.

use crate::error::{Error, Result};

/// Longest code, in bits.
pub const MAX_LEN: u32 = 12;
const STREAMS: usize = 4;

/// Histogram of a byte slice (four sub-histograms avoid store-to-load stalls on runs).
pub fn histogram(data: &[u8]) -> [u32; 256] {
    let mut h = [[0u32; 256]; 4];
    let mut it = data.chunks_exact(4);
    for c in &mut it {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in it.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u32; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    out
}

/// Huffman code lengths (0 for unused symbols), at most `MAX_LEN`. Needs two or more used
/// symbols. Deterministic: ties are broken by symbol value.
pub fn code_lengths(hist: &[u32; 256]) -> [u8; 256] {
    let mut weights: Vec<u64> = hist.iter().map(|&c| c as u64).collect();
    loop {
        let lens = unlimited_lengths(&weights);
        if lens.iter().all(|&l| l as u32 <= MAX_LEN) {
            return lens;
        }
        // Flatten the distribution until the tree is shallow enough; rare, and costs little.
        for w in weights.iter_mut().filter(|w| **w > 0) {
            *w = (*w).div_ceil(2);
        }
    }
}

fn unlimited_lengths(weights: &[u64]) -> [u8; 256] {
    let mut leaves: Vec<(u64, usize)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(s, &w)| (w, s))
        .collect();
    leaves.sort_unstable();
    let n = leaves.len();
    let mut lens = [0u8; 256];
    if n < 2 {
        if let Some(&(_, s)) = leaves.first() {
            lens[s] = 1;
        }
        return lens;
    }
    // Two-queue construction: leaves in ascending order, internal nodes appended in order.
    let mut w: Vec<u64> = leaves.iter().map(|l| l.0).collect();
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut i1, mut i2) = (0usize, n);
    for next in n..2 * n - 1 {
        let mut pick = || {
            if i1 < n && (i2 >= next || w[i1] <= w[i2]) {
                i1 += 1;
                i1 - 1
            } else {
                i2 += 1;
                i2 - 1
            }
        };
        let a = pick();
        let b = pick();
        w.push(w[a] + w[b]);
        parent[a] = next;
        parent[b] = next;
    }
    let mut depth = vec![0u8; 2 * n - 1];
    for k in (0..2 * n - 2).rev() {
        depth[k] = depth[parent[k]].saturating_add(1);
    }
    for (i, &(_, s)) in leaves.iter().enumerate() {
        lens[s] = depth[i];
    }
    lens
}

/// Canonical codes, bit-reversed for an LSB-first stream: `(code, len)` per symbol.
fn canonical_codes(lens: &[u8; 256]) -> [(u32, u32); 256] {
    let mut order: Vec<usize> = (0..256).filter(|&s| lens[s] > 0).collect();
    order.sort_by_key(|&s| (lens[s], s));
    let mut codes = [(0u32, 0u32); 256];
    let mut code = 0u32;
    let mut prev = 0u32;
    for s in order {
        let l = lens[s] as u32;
        code <<= l - prev;
        prev = l;
        codes[s] = (code.reverse_bits() >> (32 - l), l);
        code += 1;
    }
    codes
}

/// Segment `k` of `n` symbols: `[k * ceil(n/4), (k+1) * ceil(n/4))`, clipped to `n`.
fn segment(n: usize, k: usize) -> std::ops::Range<usize> {
    let s = n.div_ceil(STREAMS);
    (k * s).min(n)..((k + 1) * s).min(n)
}

/// Bytes [`encode`] writes for `hist` with `lens` (table included).
pub fn encoded_len(hist: &[u32; 256], lens: &[u8; 256]) -> usize {
    let bits: u64 = hist
        .iter()
        .zip(lens)
        .map(|(&c, &l)| c as u64 * l as u64)
        .sum();
    // Each stream rounds up to a byte: at most 4 bytes more than the bit total.
    table_len(lens) + 4 * (STREAMS - 1) + bits.div_ceil(8) as usize + STREAMS
}

fn table_len(lens: &[u8; 256]) -> usize {
    let min = lens.iter().position(|&l| l > 0).unwrap_or(0);
    let max = lens.iter().rposition(|&l| l > 0).unwrap_or(0);
    2 + (max - min + 1).div_ceil(2)
}

/// Append the table and the four streams coding `data` (every byte must have a code).
pub fn encode(data: &[u8], lens: &[u8; 256], out: &mut Vec<u8>) {
    // Compiled for BMI2 where the CPU has it, as the decoder is (see `decode_dispatch`).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        #[target_feature(enable = "bmi2")]
        fn bmi2(data: &[u8], lens: &[u8; 256], out: &mut Vec<u8>) {
            encode_core(data, lens, out)
        }
        // SAFETY: the CPU has BMI2, checked just above.
        return unsafe { bmi2(data, lens, out) };
    }
    encode_core(data, lens, out)
}

#[inline(always)]
fn encode_core(data: &[u8], lens: &[u8; 256], out: &mut Vec<u8>) {
    let min = lens.iter().position(|&l| l > 0).unwrap_or(0);
    let max = lens.iter().rposition(|&l| l > 0).unwrap_or(0);
    out.push(min as u8);
    out.push(max as u8);
    for pair in lens[min..=max].chunks(2) {
        out.push(pair[0] | (pair.get(1).copied().unwrap_or(0) << 4));
    }
    let codes = canonical_codes(lens);
    let head = out.len();
    out.resize(head + 4 * (STREAMS - 1), 0);
    // The four segments are coded in one loop: four independent bit accumulators keep the CPU
    // busy where one would wait on its own shift-or chain.
    let segs: [&[u8]; STREAMS] = std::array::from_fn(|k| &data[segment(data.len(), k)]);
    // One per-thread scratch buffer, reused across chunks, holds the four streams side by side:
    // the 8-byte stores need room but not zeroed memory, since only the written prefix of each
    // stream is copied out.
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out of the thread-local rather than borrowed in a closure, so the loop below is
    // compiled inside this function (and with its target features).
    let mut scratch = SCRATCH.take();
    {
        let cap: [usize; STREAMS] =
            std::array::from_fn(|k| segs[k].len() * MAX_LEN as usize / 8 + 16);
        let base: [usize; STREAMS] = std::array::from_fn(|k| cap[..k].iter().sum());
        let total: usize = cap.iter().sum();
        if scratch.len() < total {
            scratch.resize(total, 0);
        }
        let mut acc = [0u64; STREAMS];
        let mut nb = [0u32; STREAMS];
        let mut pos = base;
        macro_rules! put4 {
            ($k:expr, $quad:expr) => {{
                for &s in $quad {
                    let (c, l) = codes[s as usize];
                    acc[$k] |= (c as u64) << nb[$k];
                    nb[$k] += l;
                }
                scratch[pos[$k]..pos[$k] + 8].copy_from_slice(&acc[$k].to_le_bytes());
                let nbytes = nb[$k] / 8;
                pos[$k] += nbytes as usize;
                // At most 4 * 12 + 7 = 55 bits are pending: nbytes <= 6, so the shift is in range.
                acc[$k] >>= nbytes * 8;
                nb[$k] -= nbytes * 8;
            }};
        }
        let common = segs.iter().map(|s| s.len() / 4).min().unwrap_or(0);
        // The bulk loop stores through a raw pointer: checked stores cost a compare, a branch
        // and a reload per quad, as the four streams' state leaves no register spare.
        let sp = scratch.as_mut_ptr();
        macro_rules! put4_bulk {
            ($k:expr, $quad:expr) => {{
                for &s in $quad {
                    let (c, l) = codes[s as usize];
                    acc[$k] |= (c as u64) << nb[$k];
                    nb[$k] += l;
                }
                // SAFETY: stream k has written at most 12 bits per symbol of its segment, so
                // `pos[k] + 8 <= base[k] + len * 12 / 8 + 8 <= base[k] + cap[k] <= scratch.len()`.
                unsafe { std::ptr::write_unaligned(sp.add(pos[$k]) as *mut u64, acc[$k].to_le()) };
                let nbytes = nb[$k] / 8;
                pos[$k] += nbytes as usize;
                acc[$k] >>= nbytes * 8;
                nb[$k] -= nbytes * 8;
            }};
        }
        let quads = segs[0]
            .chunks_exact(4)
            .zip(segs[1].chunks_exact(4))
            .zip(segs[2].chunks_exact(4))
            .zip(segs[3].chunks_exact(4))
            .take(common);
        for (((q0, q1), q2), q3) in quads {
            put4_bulk!(0, q0);
            put4_bulk!(1, q1);
            put4_bulk!(2, q2);
            put4_bulk!(3, q3);
        }
        for k in 0..STREAMS {
            for quad in segs[k][4 * common..].chunks(4) {
                put4!(k, quad);
            }
            if nb[k] > 0 {
                scratch[pos[k]] = acc[k] as u8;
                pos[k] += 1;
            }
        }
        for k in 0..STREAMS - 1 {
            let len = (pos[k] - base[k]) as u32;
            out[head + 4 * k..head + 4 * k + 4].copy_from_slice(&len.to_le_bytes());
        }
        for k in 0..STREAMS {
            out.extend_from_slice(&scratch[base[k]..pos[k]]);
        }
    }
    SCRATCH.set(scratch);
}

/// Parse the table and the stream bounds of data written by [`encode`].
fn parse(data: &[u8]) -> Result<([u8; 256], [usize; STREAMS + 1])> {
    let bad = |m: &str| Error::bad_payload(format!("huffman data: {m}"));
    if data.len() < 2 || data[0] > data[1] {
        return Err(bad("table header is invalid"));
    }
    let (min, max) = (data[0] as usize, data[1] as usize);
    let count = max - min + 1;
    let table_end = 2 + count.div_ceil(2);
    if data.len() < table_end + 4 * (STREAMS - 1) {
        return Err(bad("truncated table"));
    }
    let mut lens = [0u8; 256];
    for i in 0..count {
        let byte = data[2 + i / 2];
        lens[min + i] = if i % 2 == 0 { byte & 0xF } else { byte >> 4 };
    }
    let mut bounds = [0usize; STREAMS + 1];
    let mut pos = table_end + 4 * (STREAMS - 1);
    bounds[0] = pos;
    for k in 0..STREAMS - 1 {
        let at = table_end + 4 * k;
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        pos = pos
            .checked_add(len)
            .filter(|&p| p <= data.len())
            .ok_or_else(|| bad("stream lengths exceed the data"))?;
        bounds[k + 1] = pos;
    }
    bounds[STREAMS] = data.len();
    Ok((lens, bounds))
}

/// Decode `out.len()` symbols from a table and four streams written by [`encode`].
pub fn decode(data: &[u8], out: &mut [u8]) -> Result<()> {
    const IDENTITY: [u32; 256] = {
        let mut m = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            m[i] = i as u32;
            i += 1;
        }
        m
    };
    decode_dispatch::<1>(data, &IDENTITY, out)
}

/// Decode `out.len() / 2` symbols, writing `map[symbol]` as little-endian u16 values: one step
/// where byteplane would otherwise decode a symbol plane and then look every symbol up.
/// A symbol whose `map` value exceeds `0xFFFF` is an error.
pub fn decode_mapped_u16(data: &[u8], map: &[u32; 256], out: &mut [u8]) -> Result<()> {
    decode_dispatch::<2>(data, map, out)
}

/// Runs [`decode_core`] compiled for BMI2 where the CPU has it: its variable shifts (`shrx`)
/// take any register, where baseline x86-64 must move every shift count through `cl`, which
/// costs the four-stream loop about a tenth of its instructions and some register spills.
fn decode_dispatch<const W: usize>(data: &[u8], map: &[u32; 256], out: &mut [u8]) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        #[target_feature(enable = "bmi2")]
        fn bmi2<const W: usize>(data: &[u8], map: &[u32; 256], out: &mut [u8]) -> Result<()> {
            decode_core::<W>(data, map, out)
        }
        // SAFETY: the CPU has BMI2, checked just above.
        return unsafe { bmi2::<W>(data, map, out) };
    }
    decode_core::<W>(data, map, out)
}

/// Lookup table indexed by the next `MAX_LEN` bits: `map[symbol] | length << 24` (map values
/// are below 2^24). The code must be complete (Kraft sum exactly 1) with lengths <= `MAX_LEN`.
fn single_table(lens: &[u8; 256], map: &[u32; 256]) -> Result<Box<[u32; 1 << MAX_LEN]>> {
    let mut kraft = 0u64;
    let mut used = 0;
    for &l in lens.iter() {
        if l as u32 > MAX_LEN {
            return Err(Error::bad_payload(format!(
                "huffman code length {l} over {MAX_LEN}"
            )));
        }
        if l > 0 {
            kraft += 1u64 << (MAX_LEN - l as u32);
            used += 1;
        }
    }
    if used < 2 || kraft != 1u64 << MAX_LEN {
        return Err(Error::bad_payload(
            "huffman code lengths do not form a complete code",
        ));
    }
    let mut single = Box::new([0u32; 1 << MAX_LEN]);
    for (s, &(c, l)) in canonical_codes(lens).iter().enumerate() {
        if l == 0 {
            continue;
        }
        let v = map[s] | l << 24;
        for hi in 0..(1u32 << (MAX_LEN - l)) {
            single[(c | (hi << l)) as usize] = v;
        }
    }
    Ok(single)
}

/// Multi-symbol table: per `MAX_LEN`-bit pattern, as many whole symbols as fit (at most
/// `per_entry`), their `W`-byte values in bits 0..48, their count at bit 48 and the bits they
/// use at bit 60. Built without branches (every entry does `per_entry` lookups and masks off
/// what does not fit): it is rebuilt for every chunk, so its cost counts.
#[inline(always)]
fn multi_table<const W: usize>(single: &[u32; 1 << MAX_LEN]) -> Box<[u64; 1 << MAX_LEN]> {
    let per_entry = if W == 1 { 4 } else { 3 };
    let mask = (1u32 << MAX_LEN) - 1;
    let mut multi = Box::new([0u64; 1 << MAX_LEN]);
    for (p, m) in multi.iter_mut().enumerate() {
        let p = p as u32;
        let (mut e, mut bits, mut count, mut fits) = (0u64, 0u32, 0u64, u64::MAX);
        for i in 0..per_entry {
            // `bits` stays <= MAX_LEN, so the shift is in range; past the pattern it reads zeros
            // and the entry is masked off anyway.
            let s = single[((p >> bits) & mask) as usize];
            let l = s >> 24;
            fits &= ((bits + l <= MAX_LEN) as u64).wrapping_neg();
            e |= ((s & 0xFF_FFFF) as u64) << (8 * W * i) & fits;
            bits += l & fits as u32;
            count += fits & 1;
        }
        *m = e | count << 48 | (bits as u64) << 60;
    }
    multi
}

/// Decode `out.len() / W` symbols, each written as the `W` low bytes of `map[symbol]`.
///
/// Multi-symbol table entries ([`multi_table`]) hold about two symbols per lookup here. The four
/// streams decode in lockstep with their state in locals, so the CPU overlaps their
/// independent lookup chains.
#[inline(always)]
fn decode_core<const W: usize>(data: &[u8], map: &[u32; 256], out: &mut [u8]) -> Result<()> {
    let (lens, bounds) = parse(data)?;
    let limit_value = 1u64 << (8 * W);
    // A code for a symbol the map cannot represent makes the data malformed (encoders only
    // give codes to symbols they use), so the hot loop needs no per-symbol check.
    if lens
        .iter()
        .zip(map)
        .any(|(&l, &v)| l > 0 && v as u64 >= limit_value)
    {
        return Err(Error::bad_payload(
            "huffman data decodes to a symbol outside the dictionary",
        ));
    }
    let single = single_table(&lens, map)?;
    let multi = multi_table::<W>(&single);
    let per_entry = if W == 1 { 4 } else { 3 };
    let mask = (1u32 << MAX_LEN) - 1;
    let n = out.len() / W;
    // Sixteen zero bytes past the end keep every 8-byte read of a valid stream in bounds (the
    // bulk phase's buffer reads up to 8 bytes ahead of what it has consumed); a stream reading
    // past its own end only sees the next stream's bits, and the end check below rejects it.
    let mut padded = Vec::with_capacity(data.len() + 16);
    padded.extend_from_slice(data);
    padded.extend_from_slice(&[0u8; 16]);
    let limit = data.len();
    let room = 8 / W; // elements an 8-byte store covers
    let overrun = || Error::bad_payload("huffman stream ends before all symbols are decoded");
    macro_rules! step {
        ($bp:expr, $o:expr) => {{
            let Some(bytes) = padded.get($bp >> 3..($bp >> 3) + 8) else {
                return Err(overrun());
            };
            let w = u64::from_le_bytes(bytes.try_into().unwrap()) >> ($bp & 7);
            let e = multi[(w & mask as u64) as usize];
            // Bytes past the entry's values (its count and length fields included) land in
            // slots of this segment that a later store or the tail loop overwrites.
            out[$o * W..$o * W + 8].copy_from_slice(&e.to_le_bytes());
            $o += ((e >> 48) & 0xF) as usize;
            $bp += (e >> 60) as usize;
        }};
    }
    let mut bp: [usize; STREAMS] = std::array::from_fn(|k| bounds[k] * 8);
    let mut o: [usize; STREAMS] = std::array::from_fn(|k| segment(n, k).start);
    let end: [usize; STREAMS] = std::array::from_fn(|k| segment(n, k).end);
    {
        // Bulk phase: every four lookups each stream reloads its 64-bit buffer from its bit
        // position (8 bytes at bp / 8, shifted by bp % 8: at least 57 valid bits, enough for four
        // lookups of at most 12), so a reload does not depend on the previous buffer.
        let [mut o0, mut o1, mut o2, mut o3] = o;
        let [e0, e1, e2, e3] = end;
        let mut buf = [0u64; STREAMS];
        let ahead = 4 * per_entry as usize + room; // elements four lookups may touch
        let dst = out.as_mut_ptr();
        macro_rules! refill {
            ($k:expr) => {{
                let at = bp[$k] >> 3;
                let Some(bytes) = padded.get(at..at + 8) else {
                    return Err(overrun());
                };
                buf[$k] = u64::from_le_bytes(bytes.try_into().unwrap()) >> (bp[$k] & 7);
            }};
        }
        macro_rules! look {
            ($k:expr, $o:ident) => {{
                let e = multi[(buf[$k] & mask as u64) as usize];
                // SAFETY: the loop condition keeps `$o + ahead <= end <= n` before these four
                // lookups, and each lookup advances `$o` by at most `per_entry`, so this 8-byte
                // store (`room` elements) ends inside `out`. A checked slice store here cost a
                // compare, a branch and a reload of `out` per lookup, as the four streams'
                // state leaves no register spare. Bytes past the entry's values land in slots
                // this segment overwrites later.
                unsafe { std::ptr::write_unaligned(dst.add($o * W) as *mut u64, e.to_le()) };
                $o += ((e >> 48) & 0xF) as usize;
                let bits = (e >> 60) as usize;
                buf[$k] >>= bits;
                bp[$k] += bits;
            }};
        }
        while o0 + ahead <= e0 && o1 + ahead <= e1 && o2 + ahead <= e2 && o3 + ahead <= e3 {
            refill!(0);
            refill!(1);
            refill!(2);
            refill!(3);
            for _ in 0..4 {
                look!(0, o0);
                look!(1, o1);
                look!(2, o2);
                look!(3, o3);
            }
        }
        o = [o0, o1, o2, o3];
    }
    for k in 0..STREAMS {
        while o[k] + room <= end[k] {
            step!(bp[k], o[k]);
        }
        while o[k] < end[k] {
            let byte = bp[k] >> 3;
            if byte > limit {
                return Err(overrun());
            }
            let w = u64::from_le_bytes(padded[byte..byte + 8].try_into().unwrap()) >> (bp[k] & 7);
            let s = single[(w & mask as u64) as usize];
            out[o[k] * W..o[k] * W + W].copy_from_slice(&s.to_le_bytes()[..W]);
            o[k] += 1;
            bp[k] += (s >> 24) as usize;
        }
        let (lo, hi) = (bounds[k] * 8, bounds[k + 1] * 8);
        if bp[k] > hi || hi - bp[k] >= 8 || bp[k] < lo {
            return Err(Error::bad_payload(format!(
                "huffman stream {k} of {} bytes does not match its {} symbols",
                bounds[k + 1] - bounds[k],
                segment(n, k).len()
            )));
        }
        // The pad-bit rule (codecs.md "Packed codes"): the bits after the last code are zero.
        if bp[k] < hi && padded[hi / 8 - 1] >> (8 - (hi - bp[k])) != 0 {
            return Err(Error::bad_payload(format!(
                "huffman stream {k}: pad bits of its last byte are not zero"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) -> usize {
        let h = histogram(data);
        let lens = code_lengths(&h);
        let mut s = Vec::new();
        encode(data, &lens, &mut s);
        assert!(
            s.len() <= encoded_len(&h, &lens),
            "{} > {}",
            s.len(),
            encoded_len(&h, &lens)
        );
        let mut out = vec![0u8; data.len()];
        decode(&s, &mut out).unwrap();
        assert_eq!(out, data);
        s.len()
    }

    #[test]
    fn roundtrips() {
        for n in [2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100] {
            let v: Vec<u8> = (0..n as u32).map(|i| (i * 7 % 3) as u8).collect();
            roundtrip(&v);
        }
        roundtrip(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 3]);
        let v: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        roundtrip(&v);
        // 90% zeros, 10% over 7 symbols: Huffman needs about 1.3 bits per symbol.
        let v: Vec<u8> = (0..100_000u32)
            .map(|i| if i % 10 == 3 { (i % 7) as u8 + 1 } else { 0 })
            .collect();
        let len = roundtrip(&v);
        assert!(len < 100_000 * 14 / 80, "{len}");
        // Fibonacci-like counts force the length limit.
        let mut v = Vec::new();
        let (mut a, mut b) = (1usize, 1usize);
        for s in 0..25u8 {
            v.extend(std::iter::repeat_n(s, a));
            (a, b) = (b, a + b);
        }
        let lens = code_lengths(&histogram(&v));
        assert!(lens.iter().all(|&l| l as u32 <= MAX_LEN));
        roundtrip(&v);
    }

    /// The incrementally built table must equal a direct greedy decode of every pattern.
    #[test]
    fn mapped_decode_matches_and_rejects_unmapped_codes() {
        let v: Vec<u8> = (0..5000u32)
            .map(|i| [0u8, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8][(i * 7 % 12) as usize])
            .collect();
        let lens = code_lengths(&histogram(&v));
        let mut s = Vec::new();
        encode(&v, &lens, &mut s);
        let mut map = [0x1_0000u32; 256];
        for (i, m) in map.iter_mut().enumerate().take(9) {
            *m = 1000 + i as u32;
        }
        let mut out = vec![0u8; 2 * v.len()];
        decode_mapped_u16(&s, &map, &mut out).unwrap();
        for (i, &x) in v.iter().enumerate() {
            assert_eq!(
                u16::from_le_bytes([out[2 * i], out[2 * i + 1]]),
                1000 + x as u16
            );
        }
        // Symbol 8 unmapped while the table gives it a code: malformed.
        map[8] = 0x1_0000;
        assert!(decode_mapped_u16(&s, &map, &mut out).is_err());
        let w: Vec<u8> = v.iter().map(|&x| x.min(7)).collect();
        let mut lens2 = code_lengths(&histogram(&w));
        lens2[8] = 0;
        let mut s2 = Vec::new();
        encode(&w, &lens2, &mut s2);
        decode_mapped_u16(&s2, &map, &mut out).unwrap();
        let mut bytes = vec![0u8; w.len()];
        decode(&s2, &mut bytes).unwrap();
        assert_eq!(bytes, w);
    }

    #[test]
    fn rejects_bad_codes_and_streams() {
        let mut lens = [0u8; 256];
        lens[0] = 1;
        lens[1] = 2; // incomplete
        assert!(single_table(&lens, &[0; 256]).is_err());
        let v: Vec<u8> = (0..1000u32).map(|i| (i % 5) as u8).collect();
        let lens = code_lengths(&histogram(&v));
        let mut s = Vec::new();
        encode(&v, &lens, &mut s);
        let mut out = vec![0u8; v.len()];
        assert!(decode(&s[..s.len() - 1], &mut out).is_err());
        assert!(decode(&s, &mut out[..900]).is_err());
        let mut longer = s.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        // Flipped bits never panic.
        for i in 0..s.len() {
            let mut c = s.clone();
            c[i] ^= 0x24;
            let _ = decode(&c, &mut out);
        }
    }
}
