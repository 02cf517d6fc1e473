//! Seeded mutations for the stable smoke run: libFuzzer's cheapest moves (flip, insert,
//! delete, duplicate, splice a dictionary token), reproducible from the seed.

/// A small xorshift generator: reproducible runs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Tokens the parsers give meaning to.
const DICTIONARY: &[&[u8]] = &[
    b"/",
    b"/..",
    b"/.",
    b"%2e",
    b"%2E",
    b"%2F",
    b"%00",
    b"%%30",
    b"%",
    b"\\",
    b"?",
    b"#",
    b"\r\n",
    b"\r\n\r\n",
    b" HTTP/1.1",
    b"Host: ",
    b"GET ",
    b"G@T ",
    b"http://",
    b":",
    b"@",
    b"\x16\x03\x01",
    b"\x00\x00",
    b"\xff\xff",
    b"PRI * HTTP/2.0",
    b"---\n",
    b"kind: ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"&a",
    b"*a",
    b"!!",
    b"\t",
    b"\xc3\xa9",
];

/// One to four mutations of `input`, kept under `max` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], max: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next_u64() as u8),
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(at..at, chunk);
            }
            _ => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out.truncate(max);
    out
}
