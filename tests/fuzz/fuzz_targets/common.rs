//! Shared by the targets: mapping raw fuzz bytes onto the SMTP alphabet, so that
//! most inputs look like protocol text instead of noise the parsers reject at once
//! (smtp-proto and chasquid do the same).
#![allow(dead_code)]

use std::io::{self, Read, Write};

/// The characters SMTP commands, paths, parameters and replies are made of.
const ALPHABET: &[u8] = b"MAILFROMRCPTODATEHLOBDATQUITRSETVRFYNOOPSTARTTLSAUTHBODY=8BITMIMESIZE=NOTIFY=SUCCESS,FAILURE,DELAYNEVERORCPT=rfc822;RET=FULLHDRSENVID=SMTPUTF8<>@:.,;+-_\"\\[]() \t\r\n0123456789abcdefxyzIPv6:=";

/// Bytes below 0xE0 become alphabet characters; the rest pass through raw, so that
/// 8-bit and invalid UTF-8 input is still tried.
pub fn smtp_alphabet(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|&b| {
            if b >= 0xE0 {
                b
            } else {
                ALPHABET[b as usize % ALPHABET.len()]
            }
        })
        .collect()
}

/// The first byte chooses: raw input, or input mapped onto the alphabet.
pub fn raw_or_mapped(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => smtp_alphabet(rest),
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    }
}

/// A peer that sends `data` in reads of at most `step` bytes and swallows writes:
/// a remote server, or a milter, playing the fuzz input.
pub struct Peer {
    pub data: Vec<u8>,
    pub pos: usize,
    pub step: usize,
}

impl Peer {
    /// The first byte of `data` chooses the read size (1–256), the rest is sent.
    pub fn new(step: u8, data: &[u8]) -> Peer {
        Peer {
            data: data.to_vec(),
            pos: 0,
            step: usize::from(step) + 1,
        }
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
