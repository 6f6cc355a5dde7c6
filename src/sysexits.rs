//! The exit statuses of sysexits(3), which programs calling `sendmail` and
//! administrators' scripts read: one enum for sendmail, ternctl, ternd and the
//! local delivery child. Values as in BSD's and glibc's <sysexits.h>.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SysExit {
    Ok = 0,
    /// Bad command line.
    Usage = 64,
    /// Bad input data (a message too big, say).
    DataErr = 65,
    /// An input file is missing or unreadable.
    NoInput = 66,
    /// The addressee is unknown.
    NoUser = 67,
    /// The host name is unknown.
    NoHost = 68,
    /// A service is unavailable.
    Unavailable = 69,
    /// An internal error.
    Software = 70,
    /// An operating system error (fork, setuid, ...).
    OsErr = 71,
    /// A system file is missing or bad.
    OsFile = 72,
    /// An output file cannot be created.
    CantCreat = 73,
    /// An I/O error.
    IoErr = 74,
    /// A temporary failure: the caller should try again later.
    TempFail = 75,
    /// A remote error in the protocol.
    Protocol = 76,
    /// Not permitted.
    NoPerm = 77,
    /// A configuration error.
    Config = 78,
}

impl SysExit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for an exit code, if it is one of sysexits.h's (or 0).
    pub fn from_code(code: i32) -> Option<SysExit> {
        use SysExit::*;
        [
            Ok,
            Usage,
            DataErr,
            NoInput,
            NoUser,
            NoHost,
            Unavailable,
            Software,
            OsErr,
            OsFile,
            CantCreat,
            IoErr,
            TempFail,
            Protocol,
            NoPerm,
            Config,
        ]
        .into_iter()
        .find(|s| i32::from(s.code()) == code)
    }
}

impl From<SysExit> for ExitCode {
    fn from(s: SysExit) -> ExitCode {
        ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysexits_h_values() {
        // <sysexits.h>: EX_USAGE 64 ... EX_CONFIG 78, contiguous.
        assert_eq!(SysExit::Ok.code(), 0);
        assert_eq!(SysExit::Usage.code(), 64);
        assert_eq!(SysExit::NoUser.code(), 67);
        assert_eq!(SysExit::Unavailable.code(), 69);
        assert_eq!(SysExit::CantCreat.code(), 73);
        assert_eq!(SysExit::TempFail.code(), 75);
        assert_eq!(SysExit::NoPerm.code(), 77);
        assert_eq!(SysExit::Config.code(), 78);
        for c in 64..=78 {
            assert_eq!(SysExit::from_code(c).map(SysExit::code), Some(c as u8));
        }
        assert_eq!(SysExit::from_code(0), Some(SysExit::Ok));
        assert_eq!(SysExit::from_code(1), None);
        assert_eq!(SysExit::from_code(79), None);
    }
}
