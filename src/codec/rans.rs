//! Order-0 rANS coding of bytes with four interleaved states, used by `byteplane`.
//!
//! Why rANS and not Huffman: a Huffman code spends whole bits per symbol, which costs about
//! 0.1 bit per exponent on bf16 weights (2.65 vs 2.55 bits); rANS with 12-bit probabilities is
//! within ~0.01 bit of the order-0 entropy and decodes with one table lookup per symbol.
//!
//! Parameters: probabilities quantized to `M = 2^12`; state `x` in `[2^16, 2^32)`;
//! renormalization moves 16-bit words. Symbol `i` uses state `i % 4`. The encoder works from the
//! last symbol to the first; the stream is stored so the decoder reads it front to back:
//! four initial states (high word first, states 0..3), then the renormalization words.
//! Exact byte layout and decode procedure: formats-spec/codecs.md §byteplane.
//!
//! The encoder divides with a precomputed reciprocal (the technique of Fabian Giesen's public
//! domain `rans_byte.h`), so the hot loop has no division.

use crate::error::{Error, Result};

/// Probability precision in bits.
pub const PROB_BITS: u32 = 12;
const M: u32 = 1 << PROB_BITS;
const L: u32 = 1 << 16;
const LANES: usize = 4;

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

/// Quantize a histogram (two or more used symbols) to frequencies summing to exactly `M`,
/// every used symbol at least 1. Deterministic.
pub fn normalize(hist: &[u32; 256]) -> [u16; 256] {
    let total: u64 = hist.iter().map(|&c| c as u64).sum();
    let mut f = [0u16; 256];
    let mut sum: i64 = 0;
    for s in 0..256 {
        if hist[s] > 0 {
            let v = ((hist[s] as u64 * M as u64 + total / 2) / total).max(1);
            f[s] = v as u16;
            sum += v as i64;
        }
    }
    // Give the rounding difference to (or take it from) the largest symbols, which feel it least.
    let mut order: Vec<usize> = (0..256).filter(|&s| hist[s] > 0).collect();
    order.sort_by(|&a, &b| hist[b].cmp(&hist[a]).then(a.cmp(&b)));
    let mut diff = M as i64 - sum;
    while diff != 0 {
        for &s in &order {
            if diff > 0 {
                f[s] += 1;
                diff -= 1;
            } else if f[s] > 1 {
                f[s] -= 1;
                diff += 1;
            }
            if diff == 0 {
                break;
            }
        }
    }
    f
}

/// Estimated stream size in bytes for `hist` coded with `freqs`.
pub fn estimate_len(hist: &[u32; 256], freqs: &[u16; 256]) -> usize {
    let bits: f64 = hist
        .iter()
        .zip(freqs)
        .filter(|(&c, _)| c > 0)
        .map(|(&c, &f)| c as f64 * (PROB_BITS as f64 - (f as f64).log2()))
        .sum();
    (bits / 8.0) as usize + 2 * 2 * LANES
}

/// Append the frequency table: `min_sym`, `max_sym`, then LEB128 frequencies for min..=max.
pub fn write_table(freqs: &[u16; 256], out: &mut Vec<u8>) {
    let min = freqs.iter().position(|&f| f > 0).unwrap_or(0);
    let max = freqs.iter().rposition(|&f| f > 0).unwrap_or(0);
    out.push(min as u8);
    out.push(max as u8);
    for &f in &freqs[min..=max] {
        let mut v = f as u32;
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
}

/// Read a table; frequencies must sum to `M` with at least two used symbols.
pub fn read_table(b: &[u8]) -> Result<([u16; 256], usize)> {
    let bad = || Error::malformed("rANS frequency table is invalid");
    if b.len() < 2 || b[0] > b[1] {
        return Err(bad());
    }
    let (min, max) = (b[0] as usize, b[1] as usize);
    let mut freqs = [0u16; 256];
    let mut pos = 2;
    let mut sum = 0u32;
    for f in &mut freqs[min..=max] {
        let mut v = 0u32;
        for shift in [0, 7] {
            let byte = *b.get(pos).ok_or_else(bad)?;
            pos += 1;
            v |= ((byte & 0x7F) as u32) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            if shift == 7 {
                return Err(bad());
            }
        }
        if v > M {
            return Err(bad());
        }
        *f = v as u16;
        sum += v;
    }
    let used = freqs.iter().filter(|&&f| f > 0).count();
    if sum != M || used < 2 {
        return Err(bad());
    }
    Ok((freqs, pos))
}

#[derive(Clone, Copy, Default)]
struct EncSym {
    x_max: u32,
    rcp_freq: u32,
    bias: u32,
    cmpl_freq: u32,
    rcp_shift: u32,
}

fn enc_symbols(freqs: &[u16; 256]) -> [EncSym; 256] {
    let mut t = [EncSym::default(); 256];
    let mut start = 0u32;
    for s in 0..256 {
        let f = freqs[s] as u32;
        if f == 0 {
            continue;
        }
        let e = &mut t[s];
        e.x_max = ((L >> PROB_BITS) << 16) * f;
        e.cmpl_freq = M - f;
        if f < 2 {
            // x/1 needs no division: q = x - 1 via the all-ones reciprocal, bias absorbs the rest.
            e.rcp_freq = !0;
            e.rcp_shift = 0;
            e.bias = start + M - 1;
        } else {
            let mut shift = 0;
            while f > (1u32 << shift) {
                shift += 1;
            }
            e.rcp_freq = (((1u64 << (shift + 31)) + f as u64 - 1) / f as u64) as u32;
            e.rcp_shift = shift - 1;
            e.bias = start;
        }
        e.rcp_shift += 32;
        start += f;
    }
    t
}

/// Encode `data` (every symbol must have a non-zero frequency); appends the stream to `out`.
pub fn encode(data: &[u8], freqs: &[u16; 256], out: &mut Vec<u8>) {
    let syms = enc_symbols(freqs);
    let mut words: Vec<u16> = Vec::with_capacity(data.len() / 4 + 16);
    let mut x = [L; LANES];
    for i in (0..data.len()).rev() {
        let k = i % LANES;
        let e = &syms[data[i] as usize];
        let mut s = x[k];
        if s >= e.x_max {
            words.push(s as u16);
            s >>= 16;
        }
        let q = ((s as u64 * e.rcp_freq as u64) >> e.rcp_shift) as u32;
        x[k] = s.wrapping_add(e.bias).wrapping_add(q.wrapping_mul(e.cmpl_freq));
    }
    for k in (0..LANES).rev() {
        words.push(x[k] as u16);
        words.push((x[k] >> 16) as u16);
    }
    out.reserve(words.len() * 2);
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Decoding table for one frequency set: `sym | (freq - 1) << 8 | (slot - start) << 20`.
pub struct Decoder {
    table: Vec<u32>,
}

impl Decoder {
    /// Build from a table read by [`read_table`].
    pub fn new(freqs: &[u16; 256]) -> Decoder {
        let mut table = Vec::with_capacity(M as usize);
        for (s, &f) in freqs.iter().enumerate() {
            for j in 0..f as u32 {
                table.push(s as u32 | (f as u32 - 1) << 8 | j << 20);
            }
        }
        Decoder { table }
    }

    /// Decode `out.len()` symbols; the stream must be used exactly and end in the initial states.
    pub fn decode(&self, stream: &[u8], out: &mut [u8]) -> Result<()> {
        let bad = |m: &str| Error::malformed(format!("rANS stream: {m}"));
        if stream.len() % 2 != 0 || stream.len() < 4 * LANES {
            return Err(bad("length is not whole 16-bit words holding the states"));
        }
        let word = |i: usize| u16::from_le_bytes([stream[2 * i], stream[2 * i + 1]]) as u32;
        let n_words = stream.len() / 2;
        let mut x = [0u32; LANES];
        for (k, s) in x.iter_mut().enumerate() {
            *s = word(2 * k) << 16 | word(2 * k + 1);
            if *s < L {
                return Err(bad("initial state out of range"));
            }
        }
        let mut pos = 2 * LANES;
        let table = &self.table[..M as usize];
        let step = |s: &mut u32, o: &mut u8, pos: &mut usize| {
            let e = table[(*s & (M - 1)) as usize];
            *o = e as u8;
            let f = ((e >> 8) & 0xFFF) + 1;
            *s = f.wrapping_mul(*s >> PROB_BITS).wrapping_add(e >> 20);
            if *s < L {
                let w = if *pos < n_words { word(*pos) } else { 0 };
                *s = *s << 16 | w;
                *pos += 1;
            }
        };
        let mut quads = out.chunks_exact_mut(LANES);
        for q in &mut quads {
            let [o0, o1, o2, o3] = q else { unreachable!() };
            let [x0, x1, x2, x3] = &mut x;
            step(x0, o0, &mut pos);
            step(x1, o1, &mut pos);
            step(x2, o2, &mut pos);
            step(x3, o3, &mut pos);
        }
        for (k, o) in quads.into_remainder().iter_mut().enumerate() {
            step(&mut x[k], o, &mut pos);
        }
        if pos != n_words || x.iter().any(|&s| s != L) {
            return Err(bad("does not end where the encoder began (corrupt payload)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) -> usize {
        let h = histogram(data);
        let f = normalize(&h);
        assert_eq!(f.iter().map(|&v| v as u32).sum::<u32>(), M);
        let mut t = Vec::new();
        write_table(&f, &mut t);
        let (f2, used) = read_table(&t).unwrap();
        assert_eq!((f2, used), (f, t.len()));
        let mut s = Vec::new();
        encode(data, &f, &mut s);
        let mut out = vec![0u8; data.len()];
        Decoder::new(&f).decode(&s, &mut out).unwrap();
        assert_eq!(out, data);
        s.len()
    }

    #[test]
    fn roundtrips_and_compresses() {
        roundtrip(&[1, 2]);
        roundtrip(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 3]);
        let v: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        roundtrip(&v);
        // 90% zeros, 10% spread over 7 symbols: 0.469 + 0.1 * log2(7) = 0.75 bits per symbol.
        let v: Vec<u8> = (0..100_000u32).map(|i| if i % 10 == 3 { (i % 7) as u8 + 1 } else { 0 }).collect();
        let len = roundtrip(&v);
        assert!(len < 100_000 * 76 / 800, "{len}");
        // One very rare symbol (frequency 1).
        let mut v = vec![5u8; 50_000];
        v[777] = 9;
        roundtrip(&v);
    }

    /// Corruption must never panic. It is usually an error, but a flip can turn one symbol into
    /// another of equal frequency without disturbing the states; the chunk CRC catches those.
    #[test]
    fn corrupt_streams_are_errors() {
        let v: Vec<u8> = (0..1000u32).map(|i| (i % 5) as u8).collect();
        let f = normalize(&histogram(&v));
        let mut s = Vec::new();
        encode(&v, &f, &mut s);
        let d = Decoder::new(&f);
        let mut out = vec![0u8; v.len()];
        let mut detected = 0;
        for i in 0..s.len() {
            let mut c = s.clone();
            c[i] ^= 0x10;
            match d.decode(&c, &mut out) {
                Err(_) => detected += 1,
                Ok(()) => assert_ne!(out, v, "flip at {i} went unnoticed"),
            }
        }
        assert!(detected * 2 > s.len(), "{detected} of {}", s.len());
        assert!(d.decode(&s[..s.len() - 2], &mut out).is_err());
        assert!(d.decode(&s, &mut out[..999]).is_err());
    }
}
