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

fn shared_poll(params: &[u8]) -> Result<SharedPollPub, DecodeError> {
    match decode_params(Method::SharedPollPublish, params)? {
        Command::SharedPollPublish(p) => Ok(p),
        c => panic!("{c:?}"),
    }
}

#[test]
fn shared_poll_publish_params() {
    let p = shared_poll(br#"{"channel":"prices:eu","key":"a","version":5,"epoch":"e1","data":{"v": 5}}"#).unwrap();
    assert_eq!((&*p.channel, &*p.key, p.version, &*p.epoch), ("prices:eu", "a", 5, "e1"));
    let data = p.data.unwrap();
    assert_eq!((&data.bytes[..], data.binary), (&br#"{"v": 5}"#[..], false));
    // `b64data` wins over `data` and is binary.
    let p = shared_poll(br#"{"channel":"c","key":"k","version":1,"data":1,"b64data":"/wA="}"#).unwrap();
    let data = p.data.unwrap();
    assert_eq!((&data.bytes[..], data.binary), (&[0xff, 0][..], true));
    // No data at all: published empty, as Centrifugo does.
    let p = shared_poll(br#"{"channel":"c","key":"k","version":18446744073709551615}"#).unwrap();
    assert_eq!(p.version, u64::MAX);
    assert!(p.data.unwrap().bytes.is_empty());
    assert_eq!(&*p.epoch, "");
    // Bad base64 is decoded, for the executor to answer 107 after its namespace checks.
    let p = shared_poll(br#"{"channel":"c","key":"k","version":1,"b64data":"!!"}"#).unwrap();
    assert!(p.data.is_none());
}

#[test]
fn shared_poll_publish_errors() {
    let bad = DecodeError::Api(ApiError::BAD_REQUEST);
    for params in [
        &br#"{"key":"k","version":1}"#[..],
        br#"{"channel":"","key":"k","version":1}"#,
        br#"{"channel":"c","version":1}"#,
        br#"{"channel":"c","key":"k"}"#,
        br#"{"channel":"c","key":"k","version":0}"#,
        b"{}",
        b"null",
    ] {
        assert_eq!(shared_poll(params).unwrap_err(), bad, "{}", String::from_utf8_lossy(params));
    }
    for params in [
        &br#"{"channel":"c","key":"k","version":-1}"#[..],
        br#"{"channel":"c","key":"k","version":"1"}"#,
        br#"{"channel":"c","key":5,"version":1}"#,
        br#"["c","k",1]"#,
    ] {
        assert_eq!(shared_poll(params).unwrap_err(), DecodeError::Malformed, "{}", String::from_utf8_lossy(params));
    }
}

#[test]
fn shared_poll_publish_by_name_number_and_in_batch() {
    assert_eq!(Method::from_name("shared_poll_publish"), Some(Method::SharedPollPublish));
    assert_eq!(Method::from_name("SHARED_POLL_PUBLISH"), Some(Method::SharedPollPublish));
    assert_eq!(Method::SharedPollPublish.name(), "shared_poll_publish");
    assert_eq!(Method::from_number(39), Some(Method::SharedPollPublish));
    assert_eq!(Method::from_number(38), Some(Method::MapClear));
    assert_eq!(Method::from_number(36), Some(Method::MapReadStream));
    assert_eq!(Method::from_number(14), None);
    let params = r#"{"channel":"c","key":"k","version":2,"data":{}}"#;
    for line in [
        format!(r#"{{"id":7,"method":"shared_poll_publish","params":{params}}}"#),
        format!(r#"{{"id":7,"method":39,"params":{params}}}"#),
    ] {
        let l = decode_line(line.as_bytes());
        assert_eq!(l.id, 7);
        assert!(matches!(l.command, Ok(Command::SharedPollPublish(SharedPollPub { version: 2, .. }))), "{line}");
    }
    let l = decode_line(br#"{"id":8,"method":"shared_poll_publish","params":{"channel":"c","key":"k"}}"#);
    assert_eq!((l.id, l.command.unwrap_err()), (8, ApiError::BAD_REQUEST));
    let c = decode_params(Method::Batch, format!(r#"{{"commands":[{{"shared_poll_publish":{params}}}]}}"#).as_bytes());
    let Ok(Command::Batch(b)) = c else { panic!() };
    assert!(matches!(b.commands[0], Ok(Command::SharedPollPublish(_))));
}
