use super::*;

fn lines(chunks: &[&[u8]], max: usize) -> Vec<String> {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut f = |p: Piece| {
        out.push(match p {
            Piece::Line(l) => String::from_utf8_lossy(l).into_owned(),
            Piece::TooLong => "<too long>".into(),
        })
    };
    for c in chunks {
        s.feed(c, &mut f);
    }
    s.finish(&mut f);
    out
}

#[test]
fn splits_across_chunks() {
    assert_eq!(lines(&[b"ab\ncd", b"ef\n\n  \ngh"], 100), vec!["ab", "cdef", "gh"]);
    assert_eq!(lines(&[b"a\r\nb\r\n"], 100), vec!["a", "b"]);
}

#[test]
fn too_long_lines_are_skipped_once() {
    assert_eq!(lines(&[b"0123456789\nok\n"], 5), vec!["<too long>", "ok"]);
    assert_eq!(lines(&[b"012", b"345", b"678", b"9\nok"], 5), vec!["<too long>", "ok"]);
}

#[test]
fn decodes_publish_line() {
    let l = decode_line(br#"{"id":3,"method":"publish","params":{"channel":"c","data":{"x": [1, 2]}}}"#);
    assert_eq!(l.id, 3);
    match l.command.unwrap() {
        Command::Publish(p) => {
            assert_eq!(&*p.channel, "c");
            assert_eq!(&p.data.bytes[..], br#"{"x": [1, 2]}"#);
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn legacy_method_forms() {
    assert!(matches!(
        decode_line(br#"{"method":"PRESENCE","params":{"channel":"c"}}"#).command,
        Ok(Command::Presence { .. })
    ));
    assert!(matches!(decode_line(br#"{"method":9,"params":{}}"#).command, Ok(Command::Info)));
    assert!(matches!(decode_line(br#"{"params":{"channel":"c","data":1}}"#).command, Ok(Command::Publish(_))));
    assert_eq!(decode_line(br#"{"method":"nope"}"#).command.unwrap_err(), ApiError::NOT_FOUND);
    assert_eq!(decode_line(br#"{"method":99}"#).command.unwrap_err(), ApiError::NOT_FOUND);
    assert_eq!(
        decode_line(br#"{"method":"publish","params":{"channel":"c"}}"#).command.unwrap_err(),
        ApiError::BAD_REQUEST
    );
    assert_eq!(decode_line(b"{broken").command.unwrap_err(), ApiError::BAD_REQUEST);
    assert_eq!(
        decode_line(br#"{"id":1,"method":"publish","params":{"channel":5,"data":1}}"#).command.unwrap_err(),
        ApiError::BAD_REQUEST
    );
}

#[test]
fn new_style_errors() {
    assert_eq!(decode_params(Method::Info, b"").unwrap_err(), DecodeError::Malformed);
    assert_eq!(decode_params(Method::Publish, br#"{"channel":1}"#).unwrap_err(), DecodeError::Malformed);
    assert_eq!(decode_params(Method::Publish, br#"{"data":1}"#).unwrap_err(), DecodeError::Api(ApiError::BAD_REQUEST));
    assert_eq!(
        decode_params(Method::Publish, br#"{"channel":"c","b64data":"!!"}"#).unwrap_err(),
        DecodeError::Api(ApiError::BAD_REQUEST)
    );
    assert_eq!(
        decode_params(Method::Broadcast, br#"{"channels":[],"data":1}"#).unwrap_err(),
        DecodeError::Api(ApiError::BAD_REQUEST)
    );
}

#[test]
fn batch_elements() {
    let c = decode_params(
        Method::Batch,
        br#"{"commands":[{"publish":{"channel":"a","data":1}},null,{"bogus":{}},{"info":{}}]}"#,
    )
    .unwrap();
    let Command::Batch(b) = c else { panic!() };
    assert!(matches!(b.commands[0], Ok(Command::Publish(_))));
    assert_eq!(b.commands[1].as_ref().unwrap_err(), &ApiError::BAD_REQUEST);
    assert_eq!(b.commands[2].as_ref().unwrap_err(), &ApiError::NOT_FOUND);
    assert!(matches!(b.commands[3], Ok(Command::Info)));
}
