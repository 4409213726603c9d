//! Order-0 rANS coding of bytes with four interleaved states, used by `byteplane`.
//!
//! Why rANS and not Huffman: a Huffman code spends whole bits per symbol, which costs about
//! 0.1 bit per exponent on bf16 weights (2.65 vs 2.55 bits); rANS with 12-bit probabilities is
//! within ~0.01 bit of the order-0 entropy and decodes with one table lookup per symbol.
//!
//! Parameters: probabilities quantized to `M = 2^12`; state `x` in `[2^16, 2^32)`;
//! renormalization moves 16-bit words. Symbol `i` uses state `i % 4`, and each state has a word
//! stream of its own, so the four decode chains are independent and run in parallel in the CPU
//! (a shared stream makes every state wait for the previous one's read position). The encoder
//! works from the last symbol to the first; each lane stream is stored so the decoder reads it
//! front to back: its initial state (high word first), then its renormalization words.
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
    (bits / 8.0) as usize + 8 * LANES
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
            e.rcp_freq = (1u64 << (shift + 31)).div_ceil(f as u64) as u32;
            e.rcp_shift = shift - 1;
            e.bias = start;
        }
        e.rcp_shift += 32;
        start += f;
    }
    t
}

/// Encode `data` (every symbol must have a non-zero frequency); appends the stream to `out`:
/// four `u32` lane lengths in words, then the four lane streams.
pub fn encode(data: &[u8], freqs: &[u16; 256], out: &mut Vec<u8>) {
    let syms = enc_symbols(freqs);
    // Each lane writes backwards from the end of its own buffer, so `buf[pos..]` ends up in
    // decoder order. At most one word per symbol plus the final state: never runs out.
    let cap = data.len() / LANES + 3;
    let mut bufs = [vec![0u16; cap], vec![0u16; cap], vec![0u16; cap], vec![0u16; cap]];
    let mut pos = [cap; LANES];
    // Branch-free put: store unconditionally, keep the word only if renormalization was due.
    fn put(x: &mut u32, e: &EncSym, buf: &mut [u16], pos: &mut usize) {
        let need = *x >= e.x_max;
        buf[*pos - 1] = *x as u16;
        *pos -= need as usize;
        let v = if need { *x >> 16 } else { *x };
        let q = ((v as u64 * e.rcp_freq as u64) >> e.rcp_shift) as u32;
        *x = v.wrapping_add(e.bias).wrapping_add(q.wrapping_mul(e.cmpl_freq));
    }
    let mut x = [L; LANES];
    let full = data.len() - data.len() % LANES;
    for (k, &s) in data[full..].iter().enumerate().rev() {
        put(&mut x[k], &syms[s as usize], &mut bufs[k], &mut pos[k]);
    }
    {
        let [b0, b1, b2, b3] = &mut bufs;
        let [p0, p1, p2, p3] = &mut pos;
        let [x0, x1, x2, x3] = &mut x;
        for q in data[..full].chunks_exact(LANES).rev() {
            put(x3, &syms[q[3] as usize], b3, p3);
            put(x2, &syms[q[2] as usize], b2, p2);
            put(x1, &syms[q[1] as usize], b1, p1);
            put(x0, &syms[q[0] as usize], b0, p0);
        }
    }
    for k in 0..LANES {
        bufs[k][pos[k] - 1] = x[k] as u16;
        bufs[k][pos[k] - 2] = (x[k] >> 16) as u16;
        pos[k] -= 2;
        out.extend_from_slice(&((cap - pos[k]) as u32).to_le_bytes());
    }
    for k in 0..LANES {
        out.reserve((cap - pos[k]) * 2);
        for w in &bufs[k][pos[k]..] {
            out.extend_from_slice(&w.to_le_bytes());
        }
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

    /// Decode `out.len()` symbols; each lane's stream must be used exactly and end in the
    /// encoder's initial state.
    pub fn decode(&self, stream: &[u8], out: &mut [u8]) -> Result<()> {
        let bad = |m: &str| Error::malformed(format!("rANS stream: {m}"));
        if stream.len() < 4 * LANES {
            return Err(bad("too short for the lane lengths"));
        }
        let (head, body) = stream.split_at(4 * LANES);
        let mut end = [0usize; LANES];
        let mut total = 0usize;
        for (k, e) in end.iter_mut().enumerate() {
            let len = u32::from_le_bytes(head[4 * k..4 * k + 4].try_into().unwrap()) as usize;
            if len < 2 {
                return Err(bad("a lane is shorter than its state"));
            }
            total = total.saturating_add(len);
            *e = total;
        }
        if body.len() != total.saturating_mul(2) {
            return Err(bad("lane lengths do not match the stream"));
        }
        // One zero word past the end: reads are unconditional (branch-free), clamped to the
        // lane's end, and any overrun is caught by the final position check.
        let mut words: Vec<u16> = Vec::with_capacity(total + 1);
        words.extend(body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
        words.push(0);
        let words = &words[..];
        let mut pos = [0usize; LANES];
        let mut x = [0u32; LANES];
        for k in 0..LANES {
            let p = if k == 0 { 0 } else { end[k - 1] };
            x[k] = (words[p] as u32) << 16 | words[p + 1] as u32;
            pos[k] = p + 2;
            if x[k] < L {
                return Err(bad("initial state out of range"));
            }
        }
        let table: &[u32; M as usize] = self.table[..].try_into().expect("table has M entries");
        // Plain locals and a macro (not &mut through arrays) keep all eight in registers.
        let [mut x0, mut x1, mut x2, mut x3] = x;
        let [mut p0, mut p1, mut p2, mut p3] = pos;
        let [e0, e1, e2, e3] = end;
        macro_rules! step {
            ($x:ident, $p:ident, $e:ident) => {{
                let t = table[($x & (M - 1)) as usize];
                let v = (((t >> 8) & 0xFFF) + 1).wrapping_mul($x >> PROB_BITS).wrapping_add(t >> 20);
                let need = v < L;
                let w = words[$p.min($e)] as u32;
                $x = if need { v << 16 | w } else { v };
                $p += need as usize;
                t as u8
            }};
        }
        let mut quads = out.chunks_exact_mut(LANES);
        for q in &mut quads {
            q[0] = step!(x0, p0, e0);
            q[1] = step!(x1, p1, e1);
            q[2] = step!(x2, p2, e2);
            q[3] = step!(x3, p3, e3);
        }
        let rest = quads.into_remainder();
        if !rest.is_empty() {
            rest[0] = step!(x0, p0, e0);
        }
        if rest.len() > 1 {
            rest[1] = step!(x1, p1, e1);
        }
        if rest.len() > 2 {
            rest[2] = step!(x2, p2, e2);
        }
        let (x, pos) = ([x0, x1, x2, x3], [p0, p1, p2, p3]);
        if pos != end || x.iter().any(|&s| s != L) {
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
        let v: Vec<u8> = (0..100_000u32)
            .map(|i| if i % 10 == 3 { (i % 7) as u8 + 1 } else { 0 })
            .collect();
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
