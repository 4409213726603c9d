//! Order-0 canonical Huffman coding of bytes, used by `byteplane` per plane and chunk.
//!
//! Code lengths are limited to [`MAX_LEN`] bits. The bit stream is LSB-first (the first code
//! occupies the lowest bits of the first byte), with codes bit-reversed so decoding is a table
//! lookup on the low bits. Decoding uses a 12-bit table whose entries hold up to four whole
//! symbols, which is what makes over 1 GB/s possible: at ~2.7 bits per exponent a lookup yields
//! about four symbols. Layout in formats-spec/codecs.md §byteplane.

use crate::error::{Error, Result};

/// Longest code, in bits.
pub const MAX_LEN: u32 = 11;
const MULTI_BITS: u32 = 12;

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

/// Huffman code lengths (0 for unused symbols), at most `MAX_LEN`. Needs two or more used symbols.
/// Deterministic: ties are broken by symbol value.
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

/// Size in bytes of the stream `encode` would write.
pub fn stream_len(hist: &[u32; 256], lens: &[u8; 256]) -> usize {
    let bits: u64 = hist
        .iter()
        .zip(lens)
        .map(|(&c, &l)| c as u64 * l as u64)
        .sum();
    bits.div_ceil(8) as usize
}

/// Append the table (`min_sym`, `max_sym`, 4-bit lengths low nibble first) to `out`.
pub fn write_table(lens: &[u8; 256], out: &mut Vec<u8>) {
    let min = lens.iter().position(|&l| l > 0).unwrap_or(0);
    let max = lens.iter().rposition(|&l| l > 0).unwrap_or(0);
    out.push(min as u8);
    out.push(max as u8);
    for pair in lens[min..=max].chunks(2) {
        out.push(pair[0] | (pair.get(1).copied().unwrap_or(0) << 4));
    }
}

/// Read a table written by [`write_table`]; returns the lengths and the bytes consumed.
pub fn read_table(b: &[u8]) -> Result<([u8; 256], usize)> {
    if b.len() < 2 || b[0] > b[1] {
        return Err(Error::malformed("huffman table header is invalid"));
    }
    let (min, max) = (b[0] as usize, b[1] as usize);
    let count = max - min + 1;
    let used = 2 + count.div_ceil(2);
    if b.len() < used {
        return Err(Error::malformed("huffman table is truncated"));
    }
    let mut lens = [0u8; 256];
    for i in 0..count {
        let byte = b[2 + i / 2];
        lens[min + i] = if i % 2 == 0 { byte & 0xF } else { byte >> 4 };
    }
    Ok((lens, used))
}

/// Encode `data` with the code given by `lens` (which must cover every symbol present).
pub fn encode(data: &[u8], lens: &[u8; 256], out: &mut Vec<u8>) {
    let codes = canonical_codes(lens);
    let start = out.len();
    let bound = data.len() * MAX_LEN as usize / 8 + 16;
    out.resize(start + bound, 0);
    let buf = &mut out[start..];
    let (mut acc, mut nb, mut pos) = (0u64, 0u32, 0usize);
    for quad in data.chunks(4) {
        for &s in quad {
            let (c, l) = codes[s as usize];
            acc |= (c as u64) << nb;
            nb += l;
        }
        buf[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
        let nbytes = nb / 8;
        pos += nbytes as usize;
        acc = if nbytes == 8 { 0 } else { acc >> (nbytes * 8) };
        nb -= nbytes * 8;
    }
    if nb > 0 {
        buf[pos] = acc as u8;
        pos += 1;
    }
    out.truncate(start + pos);
}

/// Decoding tables for one code.
pub struct Decoder {
    /// `sym | len << 8`, indexed by the next `MAX_LEN` bits.
    single: Vec<u16>,
    /// Up to four symbols in bytes 0..4, their count in byte 4, bits used in byte 5.
    multi: Vec<u64>,
}

impl Decoder {
    /// Build tables; the code must be complete (Kraft sum exactly 1) with lengths <= `MAX_LEN`.
    pub fn new(lens: &[u8; 256]) -> Result<Decoder> {
        let mut kraft = 0u64;
        let mut used = 0;
        for &l in lens.iter() {
            if l as u32 > MAX_LEN {
                return Err(Error::malformed(format!("huffman code length {l} over {MAX_LEN}")));
            }
            if l > 0 {
                kraft += 1u64 << (MAX_LEN - l as u32);
                used += 1;
            }
        }
        if used < 2 || kraft != 1u64 << MAX_LEN {
            return Err(Error::malformed("huffman code lengths do not form a complete code"));
        }
        let codes = canonical_codes(lens);
        let mut single = vec![0u16; 1 << MAX_LEN];
        for (s, &(c, l)) in codes.iter().enumerate() {
            if l == 0 {
                continue;
            }
            for hi in 0..(1u32 << (MAX_LEN - l)) {
                single[(c | (hi << l)) as usize] = s as u16 | (l as u16) << 8;
            }
        }
        let mask = (1u32 << MAX_LEN) - 1;
        let multi = (0..1u32 << MULTI_BITS)
            .map(|p| {
                let (mut e, mut bits, mut count) = (0u64, 0u32, 0u32);
                while count < 4 {
                    let d = single[((p >> bits) & mask) as usize];
                    let l = (d >> 8) as u32;
                    if bits + l > MULTI_BITS {
                        break;
                    }
                    e |= ((d & 0xFF) as u64) << (8 * count);
                    bits += l;
                    count += 1;
                }
                e | (count as u64) << 32 | (bits as u64) << 40
            })
            .collect();
        Ok(Decoder { single, multi })
    }

    /// Decode exactly `out.len()` symbols from `stream`, which must be used up to its last byte.
    pub fn decode(&self, stream: &[u8], out: &mut [u8]) -> Result<()> {
        let n = out.len();
        let total_bits = stream.len() as u64 * 8;
        let mut padded = Vec::with_capacity(stream.len() + 8);
        padded.extend_from_slice(stream);
        padded.extend_from_slice(&[0u8; 8]);
        let limit = stream.len(); // a read may start at byte `limit` at most (then all padding)
        let (mut bitpos, mut o) = (0usize, 0usize);
        let mask = (1u64 << MULTI_BITS) - 1;
        while o + 4 <= n {
            let byte = bitpos >> 3;
            if byte > limit {
                return Err(overrun());
            }
            let w = u64::from_le_bytes(padded[byte..byte + 8].try_into().unwrap()) >> (bitpos & 7);
            let e = self.multi[(w & mask) as usize];
            out[o..o + 4].copy_from_slice(&(e as u32).to_le_bytes());
            o += ((e >> 32) & 0xFF) as usize;
            bitpos += ((e >> 40) & 0xFF) as usize;
        }
        let mask = (1u64 << MAX_LEN) - 1;
        while o < n {
            let byte = bitpos >> 3;
            if byte > limit {
                return Err(overrun());
            }
            let w = u64::from_le_bytes(padded[byte..byte + 8].try_into().unwrap()) >> (bitpos & 7);
            let d = self.single[(w & mask) as usize];
            out[o] = d as u8;
            o += 1;
            bitpos += (d >> 8) as usize;
        }
        let bitpos = bitpos as u64;
        if bitpos > total_bits || total_bits - bitpos >= 8 {
            return Err(Error::malformed(format!(
                "huffman stream of {} bytes does not match {n} symbols ({bitpos} bits used)",
                stream.len()
            )));
        }
        Ok(())
    }
}

fn overrun() -> Error {
    Error::malformed("huffman stream ends before all symbols are decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let h = histogram(data);
        let lens = code_lengths(&h);
        let mut table = Vec::new();
        write_table(&lens, &mut table);
        let (back, used) = read_table(&table).unwrap();
        assert_eq!(used, table.len());
        assert_eq!(back, lens);
        let mut s = Vec::new();
        encode(data, &lens, &mut s);
        assert_eq!(s.len(), stream_len(&h, &lens));
        let mut out = vec![0u8; data.len()];
        Decoder::new(&lens).unwrap().decode(&s, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn roundtrips() {
        roundtrip(&[1, 2]);
        roundtrip(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 3]);
        let v: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        roundtrip(&v);
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

    #[test]
    fn rejects_bad_codes_and_streams() {
        let mut lens = [0u8; 256];
        lens[0] = 1;
        lens[1] = 2; // incomplete
        assert!(Decoder::new(&lens).is_err());
        lens[2] = 2;
        let d = Decoder::new(&lens).unwrap();
        let mut out = vec![0u8; 100];
        assert!(d.decode(&[0xFF], &mut out).is_err());
        assert!(d.decode(&[0u8; 100], &mut out[..8]).is_err());
    }
}
