//! A JPEG decoder that reproduces libjpeg-turbo's default output, which is what Pillow (and so
//! transformers) sees: Huffman-coded baseline and progressive 8-bit images, the accurate
//! integer IDCT (`jidctint.c`), "fancy" triangular chroma upsampling (`jdsample.c`) and the
//! table-driven YCbCr -> RGB conversion (`jdcolor.c`). Other decoders (the `image` crate's
//! zune-jpeg among them) round differently and are off by a few levels on most pixels.
//!
//! Anything outside that scope (arithmetic coding, 12-bit, lossless, CMYK, DNL) is reported as
//! [`JpegError::Unsupported`] so the caller can fall back to another decoder.

use image::{DynamicImage, GrayImage, RgbImage};

#[derive(Debug)]
pub enum JpegError {
    /// A valid JPEG this decoder does not handle.
    Unsupported(String),
    /// Malformed data.
    Corrupt(String),
    /// The data ends before the image does (inside a scan, or with no EOI marker after the
    /// last one). Pillow refuses such files ("image file is truncated").
    Truncated,
}

impl std::fmt::Display for JpegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JpegError::Unsupported(m) => write!(f, "unsupported JPEG: {m}"),
            JpegError::Corrupt(m) => write!(f, "corrupt JPEG: {m}"),
            JpegError::Truncated => write!(f, "image file is truncated"),
        }
    }
}

impl std::error::Error for JpegError {}

type Result<T> = std::result::Result<T, JpegError>;

fn corrupt<T>(m: impl Into<String>) -> Result<T> {
    Err(JpegError::Corrupt(m.into()))
}

fn unsupported<T>(m: impl Into<String>) -> Result<T> {
    Err(JpegError::Unsupported(m.into()))
}

/// Zigzag index -> natural (row-major) index, padded as libjpeg pads it so that corrupt runs
/// past 63 land on the last coefficient instead of out of bounds.
#[rustfmt::skip]
const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
];

/// Decodes a JPEG file's bytes into an 8-bit grayscale or RGB image.
pub fn decode(data: &[u8]) -> Result<DynamicImage> {
    Decoder::new(data).decode()
}

#[derive(Clone, Default)]
struct Huffman {
    /// `(code length, value)` for every 9-bit prefix whose code is at most 9 bits long.
    lookup: Vec<(u8, u8)>,
    /// Largest code of each length (index 1..=16), -1 when none.
    maxcode: [i32; 18],
    /// `values[code + valoffset[len]]` is the symbol of a `len`-bit code.
    valoffset: [i32; 18],
    values: Vec<u8>,
}

const LOOKAHEAD: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return corrupt("bad Huffman table");
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKAHEAD];
        let mut code: i32 = 0;
        let mut p: usize = 0;
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            if n > 0 {
                valoffset[len] = p as i32 - code;
                for _ in 0..n {
                    // More codes of this length than there are (libjpeg: JERR_BAD_HUFF_TABLE);
                    // found by fuzzing, it used to index past the lookup table.
                    if code >= (1 << len) {
                        return corrupt("bad Huffman code lengths");
                    }
                    if len as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len as u32;
                        let start = (code as usize) << shift;
                        for e in &mut lookup[start..start + (1 << shift)] {
                            *e = (len as u8, values[p]);
                        }
                    }
                    code += 1;
                    p += 1;
                }
                maxcode[len] = code - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Self {
            lookup,
            maxcode,
            valoffset,
            values,
        })
    }
}

/// Entropy-coded data reader: removes byte stuffing and, like libjpeg, feeds zeros once a
/// marker (or the end of the data) is reached.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
    at_marker: bool,
    /// The data ended inside the scan (a truncated file, which Pillow refuses).
    hit_eof: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            nbits: 0,
            at_marker: false,
            hit_eof: false,
        }
    }

    fn fill(&mut self) {
        while self.nbits <= 56 {
            let mut byte = 0u8;
            if !self.at_marker {
                match self.data.get(self.pos) {
                    None => {
                        self.at_marker = true;
                        self.hit_eof = true;
                    }
                    Some(&0xFF) => {
                        if self.data.get(self.pos + 1) == Some(&0) {
                            byte = 0xFF;
                            self.pos += 2;
                        } else {
                            self.at_marker = true;
                        }
                    }
                    Some(&b) => {
                        byte = b;
                        self.pos += 1;
                    }
                }
            }
            self.acc |= (byte as u64) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.nbits < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.nbits -= n;
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    fn bit(&mut self) -> bool {
        self.bits(1) == 1
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8> {
        let look = self.peek(LOOKAHEAD) as usize;
        let (len, val) = h.lookup[look];
        if len > 0 {
            self.consume(len as u32);
            return Ok(val);
        }
        for len in (LOOKAHEAD + 1)..=16 {
            let code = self.peek(len) as i32;
            if code <= h.maxcode[len as usize] {
                self.consume(len);
                let idx = code + h.valoffset[len as usize];
                return h
                    .values
                    .get(idx as usize)
                    .copied()
                    .map_or_else(|| corrupt("bad Huffman code"), Ok);
            }
        }
        corrupt("bad Huffman code")
    }

    /// Drops buffered bits and moves past the next marker if it is a restart marker.
    fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        self.at_marker = false;
        // Skip to the marker (there should be nothing in between).
        while self.pos + 1 < self.data.len()
            && !(self.data[self.pos] == 0xFF
                && self.data[self.pos + 1] != 0
                && self.data[self.pos + 1] != 0xFF)
        {
            self.pos += 1;
        }
        if self.pos + 1 < self.data.len() && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
            self.pos += 2;
        }
    }

    /// Position of the marker that ends the scan.
    fn end_position(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            if self.data[p] == 0xFF
                && self.data[p + 1] != 0
                && !(0xD0..=0xD7).contains(&self.data[p + 1])
            {
                return p;
            }
            p += 1;
        }
        self.data.len()
    }
}

fn extend(v: u32, s: u8) -> i32 {
    if s == 0 {
        return 0;
    }
    let v = v as i32;
    if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Blocks per row / column allocated (whole MCUs).
    bw: usize,
    bh: usize,
    /// Sample dimensions before upsampling.
    dw: usize,
    dh: usize,
    /// IDCT output, `bw * 8` samples per row.
    plane: Vec<u8>,
    /// Coefficients (natural order) of every block; progressive images only.
    coefs: Vec<i16>,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: usize,
    comps: Vec<Component>,
    width: usize,
    height: usize,
    progressive: bool,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
    jfif: bool,
    adobe_transform: Option<u8>,
    eobrun: u32,
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            qt: [None; 4],
            dc: Default::default(),
            ac: Default::default(),
            restart_interval: 0,
            comps: Vec::new(),
            width: 0,
            height: 0,
            progressive: false,
            hmax: 1,
            vmax: 1,
            mcux: 0,
            mcuy: 0,
            jfif: false,
            adobe_transform: None,
            eobrun: 0,
        }
    }

    fn u8_at(&self, p: usize) -> Result<u8> {
        self.data.get(p).copied().ok_or(JpegError::Truncated)
    }

    fn u16_at(&self, p: usize) -> Result<usize> {
        Ok(((self.u8_at(p)? as usize) << 8) | self.u8_at(p + 1)? as usize)
    }

    fn decode(mut self) -> Result<DynamicImage> {
        if self.data.len() < 4 || self.data[0] != 0xFF || self.data[1] != 0xD8 {
            return corrupt("no SOI marker");
        }
        self.pos = 2;
        let mut seen_scan = false;
        loop {
            // Find the next marker, skipping fill bytes (and stray data, as libjpeg does).
            while self.pos < self.data.len() && self.data[self.pos] != 0xFF {
                self.pos += 1;
            }
            while self.pos < self.data.len() && self.data[self.pos] == 0xFF {
                self.pos += 1;
            }
            if self.pos >= self.data.len() {
                // Pillow feeds libjpeg the whole file and calls it truncated when libjpeg asks
                // for more: a progressive file always needs its EOI, a baseline one needs the
                // bytes after its last scan. (libjpeg sometimes finishes a baseline image a
                // few bytes short of the EOI, which Pillow then accepts; we refuse those too.)
                if seen_scan {
                    return Err(JpegError::Truncated);
                }
                return corrupt("no image data");
            }
            let marker = self.data[self.pos];
            self.pos += 1;
            match marker {
                0xD8 | 0x01 | 0xD0..=0xD7 => continue,
                0xD9 => break,
                _ => {}
            }
            let len = self.u16_at(self.pos)?;
            if len < 2 {
                return corrupt("bad segment length");
            }
            if self.pos + len > self.data.len() {
                return Err(JpegError::Truncated);
            }
            let seg = self.pos + 2..self.pos + len;
            self.pos += len;
            match marker {
                0xC0 | 0xC1 => self.read_frame(seg, false)?,
                0xC2 => self.read_frame(seg, true)?,
                0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return unsupported(format!("SOF{} coding", marker - 0xC0))
                }
                0xC4 => self.read_dht(seg)?,
                0xDB => self.read_dqt(seg)?,
                0xDD => {
                    self.restart_interval = self.u16_at(seg.start)?;
                }
                0xDA => {
                    self.read_scan(seg)?;
                    seen_scan = true;
                }
                0xDC => return unsupported("DNL marker"),
                0xE0 if self.data[seg.clone()].starts_with(b"JFIF\0") => self.jfif = true,
                0xEE => {
                    let s = &self.data[seg.clone()];
                    if s.len() >= 12 && s.starts_with(b"Adobe") {
                        self.adobe_transform = Some(s[11]);
                    }
                }
                _ => {}
            }
        }
        if self.comps.is_empty() {
            return corrupt("no frame header");
        }
        if self.progressive {
            self.idct_all()?;
        }
        self.output()
    }

    fn read_frame(&mut self, seg: std::ops::Range<usize>, progressive: bool) -> Result<()> {
        if !self.comps.is_empty() {
            return unsupported("more than one frame");
        }
        let p = seg.start;
        if self.u8_at(p)? != 8 {
            return unsupported(format!("{}-bit samples", self.u8_at(p)?));
        }
        self.height = self.u16_at(p + 1)?;
        self.width = self.u16_at(p + 3)?;
        let n = self.u8_at(p + 5)? as usize;
        if self.height == 0 {
            return unsupported("height defined by DNL");
        }
        if self.width == 0 || n == 0 {
            return corrupt("empty frame");
        }
        // Pillow's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS), checked before the
        // planes are allocated.
        if self.width * self.height > 2 * 89_478_485 {
            return corrupt(format!(
                "{}x{} pixels is more than Pillow accepts (a decompression bomb)",
                self.width, self.height
            ));
        }
        if n != 1 && n != 3 {
            return unsupported(format!("{n} components"));
        }
        if seg.len() < 6 + 3 * n {
            return corrupt("short frame header");
        }
        for i in 0..n {
            let q = p + 6 + 3 * i;
            let hv = self.u8_at(q + 1)?;
            let (h, v) = ((hv >> 4) as usize, (hv & 15) as usize);
            let tq = self.u8_at(q + 2)? as usize;
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || tq > 3 {
                return corrupt("bad component parameters");
            }
            self.comps.push(Component {
                id: self.u8_at(q)?,
                h,
                v,
                tq,
                bw: 0,
                bh: 0,
                dw: 0,
                dh: 0,
                plane: Vec::new(),
                coefs: Vec::new(),
            });
        }
        self.progressive = progressive;
        self.hmax = self.comps.iter().map(|c| c.h).max().unwrap_or(1);
        self.vmax = self.comps.iter().map(|c| c.v).max().unwrap_or(1);
        self.mcux = self.width.div_ceil(8 * self.hmax);
        self.mcuy = self.height.div_ceil(8 * self.vmax);
        let (w, h, hmax, vmax, mcux, mcuy) = (
            self.width,
            self.height,
            self.hmax,
            self.vmax,
            self.mcux,
            self.mcuy,
        );
        let pixels = (w as u64) * (h as u64);
        if pixels > (1 << 31) {
            return unsupported(format!("{w}x{h} image is too large"));
        }
        // Every block costs at least one bit of entropy-coded data (its DC code), so a short
        // file cannot describe a huge image: refuse before allocating for it.
        let luma_blocks = (mcux * hmax * mcuy * vmax) as u64;
        if luma_blocks > 8 * self.data.len() as u64 + 1024 {
            return corrupt(format!("{w}x{h} image in {} bytes", self.data.len()));
        }
        for c in &mut self.comps {
            c.bw = mcux * c.h;
            c.bh = mcuy * c.v;
            c.dw = (w * c.h).div_ceil(hmax);
            c.dh = (h * c.v).div_ceil(vmax);
            c.plane = vec![0u8; c.bw * 8 * c.bh * 8];
            if progressive {
                c.coefs = vec![0i16; c.bw * c.bh * 64];
            }
        }
        Ok(())
    }

    fn read_dht(&mut self, seg: std::ops::Range<usize>) -> Result<()> {
        let mut p = seg.start;
        while p < seg.end {
            let tc_th = self.u8_at(p)?;
            let (class, id) = (tc_th >> 4, (tc_th & 15) as usize);
            if class > 1 || id > 3 {
                return corrupt("bad Huffman table id");
            }
            let mut counts = [0u8; 16];
            for (i, c) in counts.iter_mut().enumerate() {
                *c = self.u8_at(p + 1 + i)?;
            }
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let start = p + 17;
            if start + total > seg.end {
                return corrupt("short Huffman table");
            }
            let values = self.data[start..start + total].to_vec();
            let table = Huffman::new(&counts, values)?;
            if class == 0 {
                self.dc[id] = Some(table);
            } else {
                self.ac[id] = Some(table);
            }
            p = start + total;
        }
        Ok(())
    }

    fn read_dqt(&mut self, seg: std::ops::Range<usize>) -> Result<()> {
        let mut p = seg.start;
        while p < seg.end {
            let pq_tq = self.u8_at(p)?;
            let (precision, id) = (pq_tq >> 4, (pq_tq & 15) as usize);
            if id > 3 || precision > 1 {
                return corrupt("bad quantization table");
            }
            let mut table = [0u16; 64];
            for (i, &nat) in NATURAL_ORDER.iter().take(64).enumerate() {
                table[nat] = if precision == 0 {
                    self.u8_at(p + 1 + i)? as u16
                } else {
                    self.u16_at(p + 1 + 2 * i)? as u16
                };
            }
            self.qt[id] = Some(table);
            p += 1 + 64 * (precision as usize + 1);
        }
        Ok(())
    }

    fn read_scan(&mut self, seg: std::ops::Range<usize>) -> Result<()> {
        if self.comps.is_empty() {
            return corrupt("scan before frame header");
        }
        let p = seg.start;
        let ns = self.u8_at(p)? as usize;
        if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
            return corrupt("bad scan header");
        }
        let mut scomps = Vec::with_capacity(ns);
        for i in 0..ns {
            let id = self.u8_at(p + 1 + 2 * i)?;
            let t = self.u8_at(p + 2 + 2 * i)?;
            let ci = self
                .comps
                .iter()
                .position(|c| c.id == id)
                .map_or_else(|| corrupt("scan names an unknown component"), Ok)?;
            scomps.push((ci, (t >> 4) as usize & 3, (t & 15) as usize & 3));
        }
        let q = p + 1 + 2 * ns;
        let ss = self.u8_at(q)? as usize;
        let se = self.u8_at(q + 1)? as usize;
        let a = self.u8_at(q + 2)?;
        let (ah, al) = ((a >> 4) as u32, (a & 15) as u32);
        if !self.progressive && (ss != 0 || se != 63 || ah != 0 || al != 0) {
            // libjpeg ignores these in sequential mode.
        }
        if self.progressive
            && (se > 63 || ss > se || (ss == 0 && se != 0) || (ss > 0 && ns != 1) || al > 13)
        {
            return corrupt("bad progressive scan parameters");
        }
        let data_start = seg.end;
        let mut reader = BitReader::new(self.data, data_start);
        self.eobrun = 0;
        let mut preds = vec![0i32; self.comps.len()];

        // MCU layout of this scan.
        let single = ns == 1;
        let (mcus_x, mcus_y) = if single {
            let c = &self.comps[scomps[0].0];
            (c.dw.div_ceil(8), c.dh.div_ceil(8))
        } else {
            (self.mcux, self.mcuy)
        };
        let total = mcus_x * mcus_y;
        let mut block = [0i32; 64];
        for m in 0..total {
            // The data ran out: the verdict is already "truncated", and decoding the rest
            // from zero bits could take seconds on a large frame (found by fuzzing).
            if reader.hit_eof {
                return Err(JpegError::Truncated);
            }
            if self.restart_interval > 0 && m > 0 && m % self.restart_interval == 0 {
                reader.restart();
                preds.iter_mut().for_each(|x| *x = 0);
                self.eobrun = 0;
            }
            let (mx, my) = (m % mcus_x, m / mcus_x);
            for &(ci, td, ta) in &scomps {
                let (ch, cv) = if single {
                    (1, 1)
                } else {
                    (self.comps[ci].h, self.comps[ci].v)
                };
                for v in 0..cv {
                    for h in 0..ch {
                        let (bx, by) = (mx * ch + h, my * cv + v);
                        if self.progressive {
                            self.decode_progressive_block(
                                &mut reader,
                                ci,
                                bx,
                                by,
                                td,
                                ta,
                                ss,
                                se,
                                ah,
                                al,
                                &mut preds,
                            )?;
                        } else {
                            block.fill(0);
                            self.decode_baseline_block(
                                &mut reader,
                                &mut block,
                                ci,
                                td,
                                ta,
                                &mut preds,
                            )?;
                            let comp = &self.comps[ci];
                            let qt = self.qt[comp.tq]
                                .as_ref()
                                .map_or_else(|| corrupt("missing quantization table"), Ok)?;
                            let stride = comp.bw * 8;
                            let off = by * 8 * stride + bx * 8;
                            let mut coefs = [0i32; 64];
                            for (c, (&b, &q)) in coefs.iter_mut().zip(block.iter().zip(qt.iter())) {
                                // libjpeg stores coefficients as 16-bit JCOEFs.
                                *c = (b as i16 as i32) * q as i32;
                            }
                            let comp = &mut self.comps[ci];
                            idct_islow(&coefs, &mut comp.plane[off..], stride);
                        }
                    }
                }
            }
        }
        if reader.hit_eof {
            return Err(JpegError::Truncated);
        }
        self.pos = reader.end_position();
        Ok(())
    }

    fn decode_baseline_block(
        &self,
        r: &mut BitReader,
        block: &mut [i32; 64],
        ci: usize,
        td: usize,
        ta: usize,
        preds: &mut [i32],
    ) -> Result<()> {
        let dc = self.dc[td]
            .as_ref()
            .map_or_else(|| corrupt("missing DC table"), Ok)?;
        let ac = self.ac[ta]
            .as_ref()
            .map_or_else(|| corrupt("missing AC table"), Ok)?;
        let s = r.decode(dc)?;
        if s > 16 {
            return corrupt("bad DC magnitude");
        }
        let diff = extend(r.bits(s as u32), s);
        preds[ci] = preds[ci].wrapping_add(diff);
        block[0] = preds[ci];
        let mut k = 1;
        while k < 64 {
            let rs = r.decode(ac)?;
            let (run, s) = ((rs >> 4) as usize, rs & 15);
            if s != 0 {
                k += run;
                let v = extend(r.bits(s as u32), s);
                block[NATURAL_ORDER[k.min(79)]] = v;
            } else {
                if run != 15 {
                    break;
                }
                k += 15;
            }
            k += 1;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_progressive_block(
        &mut self,
        r: &mut BitReader,
        ci: usize,
        bx: usize,
        by: usize,
        td: usize,
        ta: usize,
        ss: usize,
        se: usize,
        ah: u32,
        al: u32,
        preds: &mut [i32],
    ) -> Result<()> {
        let bw = self.comps[ci].bw;
        let base = (by * bw + bx) * 64;
        if ss == 0 {
            // DC scan.
            let coefs = &mut self.comps[ci].coefs[base..base + 64];
            if ah == 0 {
                let dc = self.dc[td]
                    .as_ref()
                    .map_or_else(|| corrupt("missing DC table"), Ok)?;
                let s = r.decode(dc)?;
                if s > 16 {
                    return corrupt("bad DC magnitude");
                }
                let diff = extend(r.bits(s as u32), s);
                preds[ci] = preds[ci].wrapping_add(diff);
                coefs[0] = preds[ci].wrapping_shl(al) as i16;
            } else if r.bit() {
                coefs[0] |= (1i32 << al) as i16;
            }
            return Ok(());
        }
        let ac = self.ac[ta]
            .as_ref()
            .map_or_else(|| corrupt("missing AC table"), Ok)?;
        let coefs = &mut self.comps[ci].coefs[base..base + 64];
        if ah == 0 {
            // First AC scan.
            if self.eobrun > 0 {
                self.eobrun -= 1;
                return Ok(());
            }
            let mut k = ss;
            while k <= se {
                let rs = r.decode(ac)?;
                let (run, s) = ((rs >> 4) as u32, rs & 15);
                if s != 0 {
                    k += run as usize;
                    let v = extend(r.bits(s as u32), s);
                    coefs[NATURAL_ORDER[k.min(79)]] = v.wrapping_shl(al) as i16;
                } else if run == 15 {
                    k += 15;
                } else {
                    self.eobrun = (1 << run) + r.bits(run) - 1;
                    break;
                }
                k += 1;
            }
            return Ok(());
        }
        // AC refinement scan.
        let p1: i32 = 1 << al;
        let m1: i32 = -1 << al;
        let mut k = ss;
        let refine = |c: &mut i16, r: &mut BitReader| {
            if r.bit() {
                let v = *c as i32;
                if v & p1 == 0 {
                    *c = if v >= 0 { v + p1 } else { v + m1 } as i16;
                }
            }
        };
        if self.eobrun == 0 {
            while k <= se {
                let rs = r.decode(ac)?;
                let (mut run, s) = ((rs >> 4) as i32, rs & 15);
                let mut value = 0i32;
                if s != 0 {
                    // s should be 1; libjpeg warns and carries on.
                    value = if r.bit() { p1 } else { m1 };
                } else if run != 15 {
                    self.eobrun = (1 << run) + r.bits(run as u32);
                    break;
                }
                while k <= se {
                    let c = &mut coefs[NATURAL_ORDER[k]];
                    if *c != 0 {
                        refine(c, r);
                    } else {
                        run -= 1;
                        if run < 0 {
                            break;
                        }
                    }
                    k += 1;
                }
                if value != 0 {
                    coefs[NATURAL_ORDER[k.min(79)]] = value as i16;
                }
                k += 1;
            }
        }
        if self.eobrun > 0 {
            while k <= se {
                let c = &mut coefs[NATURAL_ORDER[k]];
                if *c != 0 {
                    refine(c, r);
                }
                k += 1;
            }
            self.eobrun -= 1;
        }
        Ok(())
    }

    fn idct_all(&mut self) -> Result<()> {
        for c in &mut self.comps {
            let qt = self.qt[c.tq]
                .as_ref()
                .map_or_else(|| corrupt("missing quantization table"), Ok)?;
            let stride = c.bw * 8;
            let mut coefs = [0i32; 64];
            for by in 0..c.bh {
                for bx in 0..c.bw {
                    let base = (by * c.bw + bx) * 64;
                    for (i, co) in coefs.iter_mut().enumerate() {
                        *co = c.coefs[base + i] as i32 * qt[i] as i32;
                    }
                    let off = by * 8 * stride + bx * 8;
                    idct_islow(&coefs, &mut c.plane[off..], stride);
                }
            }
            c.coefs = Vec::new();
        }
        Ok(())
    }

    fn output(self) -> Result<DynamicImage> {
        let (w, h) = (self.width, self.height);
        if self.comps.len() == 1 {
            let c = &self.comps[0];
            let stride = c.bw * 8;
            let mut out = Vec::with_capacity(w * h);
            for y in 0..h {
                out.extend_from_slice(&c.plane[y * stride..y * stride + w]);
            }
            return GrayImage::from_raw(w as u32, h as u32, out)
                .map(DynamicImage::ImageLuma8)
                .map_or_else(|| corrupt("bad image size"), Ok);
        }
        let full: Vec<Vec<u8>> = self
            .comps
            .iter()
            .map(|c| upsample(c, w, h, self.hmax, self.vmax))
            .collect::<Result<_>>()?;
        let is_rgb = if self.jfif {
            false
        } else if let Some(t) = self.adobe_transform {
            t == 0
        } else {
            let ids: Vec<u8> = self.comps.iter().map(|c| c.id).collect();
            ids == [b'R', b'G', b'B']
        };
        let mut out = vec![0u8; w * h * 3];
        if is_rgb {
            for i in 0..w * h {
                out[3 * i] = full[0][i];
                out[3 * i + 1] = full[1][i];
                out[3 * i + 2] = full[2][i];
            }
        } else {
            let t = YccTables::new();
            for i in 0..w * h {
                let (y, cb, cr) = (full[0][i] as i32, full[1][i] as usize, full[2][i] as usize);
                out[3 * i] = clamp8(y + t.cr_r[cr]);
                out[3 * i + 1] = clamp8(y + ((t.cb_g[cb] + t.cr_g[cr]) >> 16));
                out[3 * i + 2] = clamp8(y + t.cb_b[cb]);
            }
        }
        RgbImage::from_raw(w as u32, h as u32, out)
            .map(DynamicImage::ImageRgb8)
            .map_or_else(|| corrupt("bad image size"), Ok)
    }
}

fn clamp8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// libjpeg's `build_ycc_rgb_table` (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> Self {
        const SCALEBITS: u32 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64;
        let mut t = Self {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256usize {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = (-fix(0.71414) * x) as i32;
            t.cb_g[i] = (-fix(0.34414) * x + ONE_HALF) as i32;
        }
        t
    }
}

/// libjpeg-turbo's post-IDCT range limit: `x & 1023` indexes a table that clamps
/// [-512, 511] + 128 to [0, 255] (and wraps beyond, which only corrupt data reaches).
fn idct_range_limit(x: i32) -> u8 {
    let i = (x & 1023) as usize;
    if i < 128 {
        (i + 128) as u8
    } else if i < 512 {
        255
    } else if i < 896 {
        0
    } else {
        (i - 896) as u8
    }
}

/// `jpeg_idct_islow`: the accurate integer 8x8 inverse DCT (Loeffler-Ligtenberg-Moschytz,
/// 13-bit constants, 2 extra bits between passes). `coefs` are dequantised, in natural order.
fn idct_islow(coefs: &[i32; 64], out: &mut [u8], stride: usize) {
    const CONST_BITS: u32 = 13;
    const PASS1_BITS: u32 = 2;
    const F_0_298: i64 = 2446;
    const F_0_390: i64 = 3196;
    const F_0_541: i64 = 4433;
    const F_0_765: i64 = 6270;
    const F_0_899: i64 = 7373;
    const F_1_175: i64 = 9633;
    const F_1_501: i64 = 12299;
    const F_1_847: i64 = 15137;
    const F_1_961: i64 = 16069;
    const F_2_053: i64 = 16819;
    const F_2_562: i64 = 20995;
    const F_3_072: i64 = 25172;
    fn descale(x: i64, n: u32) -> i64 {
        (x + (1 << (n - 1))) >> n
    }
    // One 1-D pass on 8 values; returns the 8 outputs before descaling, in order.
    fn pass(v: [i64; 8]) -> [i64; 8] {
        // Even part.
        let (z2, z3) = (v[2], v[6]);
        let z1 = (z2 + z3) * F_0_541;
        let tmp2 = z1 + z3 * -F_1_847;
        let tmp3 = z1 + z2 * F_0_765;
        let tmp0 = (v[0] + v[4]) << CONST_BITS;
        let tmp1 = (v[0] - v[4]) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        // Odd part.
        let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
        let z1 = t0 + t3;
        let z2 = t1 + t2;
        let z3 = t0 + t2;
        let z4 = t1 + t3;
        let z5 = (z3 + z4) * F_1_175;
        t0 *= F_0_298;
        t1 *= F_2_053;
        t2 *= F_3_072;
        t3 *= F_1_501;
        let z1 = z1 * -F_0_899;
        let z2 = z2 * -F_2_562;
        let z3 = z3 * -F_1_961 + z5;
        let z4 = z4 * -F_0_390 + z5;
        t0 += z1 + z3;
        t1 += z2 + z4;
        t2 += z2 + z3;
        t3 += z1 + z4;
        [
            tmp10 + t3,
            tmp11 + t2,
            tmp12 + t1,
            tmp13 + t0,
            tmp13 - t0,
            tmp12 - t1,
            tmp11 - t2,
            tmp10 - t3,
        ]
    }
    let mut ws = [0i64; 64];
    for col in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|r| coefs[r * 8 + col] as i64);
        if v[1..].iter().all(|&x| x == 0) {
            let dc = v[0] << PASS1_BITS;
            for r in 0..8 {
                ws[r * 8 + col] = dc;
            }
            continue;
        }
        let o = pass(v);
        for r in 0..8 {
            ws[r * 8 + col] = descale(o[r], CONST_BITS - PASS1_BITS);
        }
    }
    for row in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|c| ws[row * 8 + c]);
        let dst = &mut out[row * stride..row * stride + 8];
        if v[1..].iter().all(|&x| x == 0) {
            let val = idct_range_limit(descale(v[0], PASS1_BITS + 3) as i32);
            dst.fill(val);
            continue;
        }
        let o = pass(v);
        for c in 0..8 {
            dst[c] = idct_range_limit(descale(o[c], CONST_BITS + PASS1_BITS + 3) as i32);
        }
    }
}

/// libjpeg-turbo's upsampling of one component to `w x h` (with `do_fancy_upsampling`).
fn upsample(c: &Component, w: usize, h: usize, hmax: usize, vmax: usize) -> Result<Vec<u8>> {
    let stride = c.bw * 8;
    let (dw, dh) = (c.dw, c.dh);
    // Row `y` of the component, with rows past the bottom replicating the last real row.
    let row = |y: usize| -> &[u8] {
        let y = y.min(dh - 1);
        &c.plane[y * stride..y * stride + dw]
    };
    let mut out = vec![0u8; w * h];
    let (hf, vf) = (hmax / c.h, vmax / c.v);
    if !hmax.is_multiple_of(c.h) || !vmax.is_multiple_of(c.v) {
        return unsupported("fractional sampling ratio");
    }
    match (hf, vf) {
        (1, 1) => {
            for y in 0..h {
                out[y * w..(y + 1) * w].copy_from_slice(&row(y)[..w]);
            }
        }
        (2, 1) if dw > 2 => {
            let mut line = vec![0u8; 2 * dw];
            for y in 0..h {
                h2v1_fancy(row(y), &mut line);
                out[y * w..(y + 1) * w].copy_from_slice(&line[..w]);
            }
        }
        (1, 2) => {
            for y in 0..h {
                let iy = y / 2;
                let (near, far, bias) = if y % 2 == 0 {
                    (row(iy), row(iy.saturating_sub(1)), 1)
                } else {
                    (row(iy), row(iy + 1), 2)
                };
                for x in 0..w {
                    out[y * w + x] = ((near[x] as i32 * 3 + far[x] as i32 + bias) >> 2) as u8;
                }
            }
        }
        (2, 2) if dw > 2 => {
            let mut line = vec![0u8; 2 * dw];
            for y in 0..h {
                let iy = y / 2;
                let far = if y % 2 == 0 {
                    row(iy.saturating_sub(1))
                } else {
                    row(iy + 1)
                };
                h2v2_fancy(row(iy), far, &mut line);
                out[y * w..(y + 1) * w].copy_from_slice(&line[..w]);
            }
        }
        _ => {
            // Box replication (`int_upsample`, `h2v1_upsample`, `h2v2_upsample`).
            for y in 0..h {
                let src = row(y / vf);
                for x in 0..w {
                    out[y * w + x] = src[x / hf];
                }
            }
        }
    }
    Ok(out)
}

/// `h2v1_fancy_upsample`: each output pixel is 3/4 the nearer input pixel + 1/4 the further.
fn h2v1_fancy(src: &[u8], out: &mut [u8]) {
    let n = src.len();
    let s = |i: usize| src[i] as i32;
    out[0] = src[0];
    out[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let v = s(i) * 3;
        out[2 * i] = ((v + s(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((v + s(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = src[n - 1];
}

/// `h2v2_fancy_upsample`: 9/16, 3/16, 3/16, 1/16 of the four nearest input pixels, from the
/// nearest row and the next nearest one (`far`).
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| near[i] as i32 * 3 + far[i] as i32;
    let mut this = col(0);
    let mut next = col(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    let mut last = this;
    this = next;
    for i in 1..n - 1 {
        next = col(i + 1);
        out[2 * i] = ((this * 3 + last + 8) >> 4) as u8;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
        last = this;
        this = next;
    }
    out[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_limit_table() {
        assert_eq!(idct_range_limit(0), 128);
        assert_eq!(idct_range_limit(-128), 0);
        assert_eq!(idct_range_limit(-300), 0);
        assert_eq!(idct_range_limit(127), 255);
        assert_eq!(idct_range_limit(400), 255);
        assert_eq!(idct_range_limit(-1), 127);
    }

    #[test]
    fn dc_only_block_is_flat() {
        let mut coefs = [0i32; 64];
        coefs[0] = 80; // +10 after the 1/8 scaling
        let mut out = vec![0u8; 64];
        idct_islow(&coefs, &mut out, 8);
        assert!(out.iter().all(|&v| v == 138), "{out:?}");
    }

    #[test]
    fn damaged_files_do_not_panic() {
        let good = include_bytes!("../../tests/fixtures/images/photo_83x57.jpg");
        assert!(decode(good).is_ok());
        for cut in (0..good.len()).step_by(7) {
            let _ = decode(&good[..cut]);
        }
        let mut state = 12345u32;
        for _ in 0..300 {
            let mut bad = good.to_vec();
            for _ in 0..4 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (state >> 8) as usize % bad.len();
                bad[i] = (state >> 3) as u8;
            }
            let _ = decode(&bad);
        }
    }

    #[test]
    fn not_a_jpeg() {
        assert!(matches!(decode(b"GIF89a"), Err(JpegError::Corrupt(_))));
    }
}
