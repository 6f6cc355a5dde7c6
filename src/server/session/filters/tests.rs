use super::*;
use crate::smtp::address::Mailbox;

#[test]
fn esmtp_arguments_in_wire_form() {
    let from = ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap());
    let p = MailParams {
        size: Some(1000),
        body: Some(command::Body::EightBitMime),
        smtputf8: true,
        ret: Some(command::Ret::Hdrs),
        envid: Some("a+b".into()),
        auth: None,
        requiretls: true,
    };
    assert_eq!(
        mail_args(&from, &p),
        [
            "<a@example.org>",
            "SIZE=1000",
            "BODY=8BITMIME",
            "SMTPUTF8",
            "RET=HDRS",
            "ENVID=a+2Bb",
            "REQUIRETLS"
        ]
    );
    assert_eq!(mail_args(&ReversePath::Null, &MailParams::default()), ["<>"]);
    assert_eq!(cipher_bits("TLS13_AES_256_GCM_SHA384"), Some(256));
    assert_eq!(cipher_bits("TLS13_AES_128_GCM_SHA256"), Some(128));
}
