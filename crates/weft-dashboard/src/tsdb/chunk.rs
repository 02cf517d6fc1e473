//! A chunk of one series' samples, compressed as Gorilla (Facebook's TSDB, and Prometheus's
//! XOR chunks) compresses them: timestamps as delta-of-deltas, values as the XOR with the
//! previous value. A scrape every 15 s of a steady counter costs about two bytes a sample.

/// Prometheus cuts a chunk at 120 samples: 30 minutes at a 15 s interval.
pub const SAMPLES_PER_CHUNK: u16 = 120;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub v: f64,
}

/// Samples appended in time order; readable at any point.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    bits: Bits,
    count: u16,
    min_t: i64,
    last: Option<Sample>,
    last_delta: i64,
    /// The leading and trailing zero counts of the last XOR written with its own window.
    window: Option<(u8, u8)>,
}

impl Chunk {
    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= SAMPLES_PER_CHUNK
    }

    pub fn min_t(&self) -> i64 {
        self.min_t
    }

    pub fn max_t(&self) -> Option<i64> {
        self.last.map(|s| s.t)
    }

    pub fn last(&self) -> Option<Sample> {
        self.last
    }

    /// Bytes held, for the store's bound.
    pub fn bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Appends a sample later than the last one; an earlier or equal time is ignored (a
    /// target answering twice in one interval), as Prometheus ignores out-of-order samples.
    pub fn push(&mut self, s: Sample) -> bool {
        let Some(last) = self.last else {
            self.bits.write(s.t as u64, 64);
            self.bits.write(s.v.to_bits(), 64);
            self.min_t = s.t;
            self.last = Some(s);
            self.count = 1;
            return true;
        };
        if s.t <= last.t {
            return false;
        }
        let delta = s.t - last.t;
        if self.count == 1 {
            // The first delta in full (14 bits cover 16 s; longer gaps take the wide form).
            write_dod(&mut self.bits, delta);
        } else {
            write_dod(&mut self.bits, delta - self.last_delta);
        }
        self.write_value(last.v, s.v);
        self.last_delta = delta;
        self.last = Some(s);
        self.count += 1;
        true
    }

    fn write_value(&mut self, prev: f64, v: f64) {
        let xor = prev.to_bits() ^ v.to_bits();
        if xor == 0 {
            self.bits.write(0, 1);
            return;
        }
        self.bits.write(1, 1);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        match self.window {
            Some((l, t)) if leading >= l && trailing >= t => {
                self.bits.write(0, 1);
                self.bits.write(xor >> t, 64 - l - t);
            }
            _ => {
                let meaningful = 64 - leading - trailing;
                self.bits.write(1, 1);
                self.bits.write(u64::from(leading), 5);
                // 64 meaningful bits are written as 0: six bits hold 0..=63.
                self.bits.write(u64::from(meaningful & 63), 6);
                self.bits.write(xor >> trailing, meaningful);
                self.window = Some((leading, trailing));
            }
        }
    }

    pub fn iter(&self) -> Samples<'_> {
        Samples {
            reader: Reader {
                bytes: &self.bits.bytes,
                pos: 0,
            },
            left: self.count,
            read: 0,
            last: Sample { t: 0, v: 0.0 },
            delta: 0,
            window: (0, 0),
        }
    }
}

/// Delta-of-delta buckets as Gorilla sizes them for millisecond timestamps.
fn write_dod(bits: &mut Bits, dod: i64) {
    let fits = |n: u8| -(1i64 << (n - 1)) <= dod && dod < 1i64 << (n - 1);
    if dod == 0 {
        bits.write(0, 1);
    } else if fits(14) {
        bits.write(0b10, 2);
        bits.write(dod as u64, 14);
    } else if fits(17) {
        bits.write(0b110, 3);
        bits.write(dod as u64, 17);
    } else if fits(20) {
        bits.write(0b1110, 4);
        bits.write(dod as u64, 20);
    } else {
        bits.write(0b1111, 4);
        bits.write(dod as u64, 64);
    }
}

pub struct Samples<'a> {
    reader: Reader<'a>,
    left: u16,
    read: u16,
    last: Sample,
    delta: i64,
    window: (u8, u8),
}

impl Iterator for Samples<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut self.reader;
        if self.read == 0 {
            self.last = Sample {
                t: r.read(64) as i64,
                v: f64::from_bits(r.read(64)),
            };
        } else {
            let dod = read_dod(r);
            self.delta = if self.read == 1 {
                dod
            } else {
                self.delta + dod
            };
            let bits = if r.read(1) == 0 {
                self.last.v.to_bits()
            } else {
                if r.read(1) == 1 {
                    let leading = r.read(5) as u8;
                    let meaningful = match r.read(6) as u8 {
                        0 => 64,
                        m => m,
                    };
                    self.window = (leading, 64 - leading - meaningful);
                }
                let (l, t) = self.window;
                self.last.v.to_bits() ^ (r.read(64 - l - t) << t)
            };
            self.last = Sample {
                t: self.last.t + self.delta,
                v: f64::from_bits(bits),
            };
        }
        self.read += 1;
        Some(self.last)
    }
}

fn read_dod(r: &mut Reader<'_>) -> i64 {
    let width = if r.read(1) == 0 {
        return 0;
    } else if r.read(1) == 0 {
        14
    } else if r.read(1) == 0 {
        17
    } else if r.read(1) == 0 {
        20
    } else {
        64
    };
    sign_extend(r.read(width), width)
}

fn sign_extend(v: u64, width: u8) -> i64 {
    if width == 64 {
        return v as i64;
    }
    let shift = 64 - u32::from(width);
    ((v << shift) as i64) >> shift
}

#[derive(Debug, Clone, Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl Bits {
    /// Writes the low `n` bits of `v`, most significant first.
    fn write(&mut self, v: u64, n: u8) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.used;
            let take = room.min(left);
            let chunk = ((v >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (room - take);
            self.used = (self.used + take) % 8;
            left -= take;
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// In bits.
    pos: usize,
}

impl Reader<'_> {
    /// Reads `n` bits; past the end reads zeros (only a chunk's own writes are read).
    fn read(&mut self, n: u8) -> u64 {
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.bytes.get(self.pos / 8).copied().unwrap_or(0);
            let offset = (self.pos % 8) as u8;
            let room = 8 - offset;
            let take = room.min(left);
            let bits = (byte >> (room - take)) & (((1u16 << take) - 1) as u8);
            v = (v << take) | u64::from(bits);
            self.pos += usize::from(take);
            left -= take;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(samples: &[Sample]) -> Chunk {
        let mut c = Chunk::default();
        for s in samples {
            assert!(c.push(*s));
        }
        let back: Vec<Sample> = c.iter().collect();
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(samples) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.v.to_bits(), b.v.to_bits(), "{a:?} vs {b:?}");
        }
        c
    }

    #[test]
    fn a_steady_counter_costs_about_two_bytes_a_sample() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| Sample {
                t: 1_764_684_000_000 + i * 15_000 + (i % 3),
                v: (i * 40) as f64,
            })
            .collect();
        let c = roundtrip(&samples);
        assert!(c.is_full());
        let per_sample = c.bits.bytes.len() as f64 / 120.0;
        assert!(per_sample < 3.0, "{per_sample} bytes a sample");
    }

    #[test]
    fn odd_values_and_gaps_round_trip() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut t = 0i64;
        let samples: Vec<Sample> = (0..120)
            .map(|i| {
                t += match i % 4 {
                    0 => 15_000,
                    1 => rng.i64(1..200_000),
                    2 => rng.i64(1..5_000_000_000),
                    _ => 1,
                };
                let v = match i % 5 {
                    0 => f64::NAN,
                    1 => rng.f64() * 1e9,
                    2 => -0.0,
                    3 => f64::INFINITY,
                    _ => f64::from_bits(rng.u64(..)),
                };
                Sample { t, v }
            })
            .collect();
        roundtrip(&samples);
    }

    #[test]
    fn out_of_order_samples_are_ignored() {
        let mut c = Chunk::default();
        assert!(c.push(Sample { t: 10, v: 1.0 }));
        assert!(!c.push(Sample { t: 10, v: 2.0 }));
        assert!(!c.push(Sample { t: 5, v: 2.0 }));
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![Sample { t: 10, v: 1.0 }]);
    }
}
