use super::*;
use crate::env::to_hex;
use crate::message::*;
use bytes::Buf;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn frame_of<M: Serialize>(msg: &M) -> BytesMut {
    let mut buf = BytesMut::new();
    write_frame(msg, &mut buf).expect("encodes");
    buf
}

fn body_hex<M: Serialize>(msg: &M) -> String {
    let frame = frame_of(msg);
    let len = u32::from_le_bytes(frame[..4].try_into().expect("prefix"));
    assert_eq!(len as usize, frame.len() - 4, "length prefix matches body");
    to_hex(&frame[4..])
}

/// Golden encodings: a change here is a wire-format change and must bump PROTOCOL_VERSION.
#[test]
fn golden_encodings() {
    let hello = FromWorker::Hello(Hello { version: 1, worker_id: 2, token: [0xab; 32], pid: 7 });
    assert_eq!(
        body_hex(&hello),
        format!("00000000{}{}{}{}", "01000000", "0200000000000000", "ab".repeat(32), "07000000")
    );
    assert_eq!(body_hex(&FromWorker::Ready), "01000000");
    // Variant 4, tag 9, last = true, 2 bytes.
    let piece = ToWorker::Body(BodyPiece { chunk: 9, last: true, bytes: b"hi".to_vec() });
    assert_eq!(
        body_hex(&piece),
        "04000000090000000000000001020000000000000068 69".replace(' ', "")
    );
    assert_eq!(
        body_hex(&FromWorker::Fatal(Fatal { reason: "no".into() })),
        "0200000002000000000000006e6f"
    );
    let done = FromWorker::Done(ChunkDone { chunk: 5, items: 2, payload: b"1\n4\n".to_vec() });
    assert_eq!(body_hex(&done), "03000000050000000000000002000000000000000400000000000000310a340a");
    let progress = FromWorker::Progress(UnitProgress { chunk: 2, done: 3 });
    assert_eq!(body_hex(&progress), "0600000002000000000000000300000000000000");
    let failed = FromWorker::Failed(ChunkFailed { chunk: 1, item: Some(-1), reason: "x".into() });
    assert_eq!(body_hex(&failed), "04000000010000000000000001ffffffffffffffff010000000000000078");
    let input = Input::Range(Format::Lines);
    let welcome = ToWorker::Welcome(Welcome { task: "square".into(), input });
    assert_eq!(
        body_hex(&welcome),
        "000000000600000000000000737175617265".to_owned() + "00000000" + "00000000"
    );
    let welcome = ToWorker::Welcome(Welcome { task: "wc".into(), input: Input::Items });
    assert_eq!(body_hex(&welcome), "0000000002000000000000007763".to_owned() + "01000000");
    // Variant 5, tag 4, first item 7, two items: "a" and "".
    let batch = ToWorker::Items(ItemBatch {
        chunk: 4,
        first: 7,
        items: vec![serde_bytes::ByteBuf::from(b"a".to_vec()), serde_bytes::ByteBuf::new()],
    });
    assert_eq!(
        body_hex(&batch),
        ["05000000", "0400000000000000", "0700000000000000", "0200000000000000"].concat()
            + "010000000000000061"
            + "0000000000000000"
    );
    // Protocol 6: a worker without the arena (variant 7).
    assert_eq!(
        body_hex(&FromWorker::NoArena(Fatal { reason: "no".into() })),
        "0700000002000000000000006e6f"
    );
    // Protocol 6: variant 6, tag 4, first item 7, 2 items, one extent (offset 16, 25 bytes).
    let at = ToWorker::ItemsAt(ItemsAt { chunk: 4, first: 7, count: 2, extents: vec![(16, 25)] });
    assert_eq!(
        body_hex(&at),
        ["06000000", "0400000000000000", "0700000000000000", "0200000000000000"].concat()
            + "0100000000000000"
            + "1000000000000000"
            + "1900000000000000"
    );
    assert_eq!(
        body_hex(&ToWorker::Reject(Reject { reason: "v".into() })),
        "01000000010000000000000076"
    );
    let run = ToWorker::Run(RunChunk { chunk: 3, start: -2, end: 2 });
    assert_eq!(body_hex(&run), "020000000300000000000000feffffffffffffff0200000000000000");
    assert_eq!(body_hex(&ToWorker::Shutdown), "03000000");
    // Protocol 4: command jobs, and a broken contract.
    let jobs = Input::Jobs(crate::jobs::JobSpec {
        timeout_ms: Some(5),
        term_grace_ms: 6,
        retries: 1,
        inline_max: 7,
        spill_dir: serde_bytes::ByteBuf::from(b"/d".to_vec()),
    });
    assert_eq!(
        body_hex(&jobs),
        ["02000000", "01", "0500000000000000", "0600000000000000", "01000000"].concat()
            + "0700000000000000"
            + "02000000000000002f64"
    );
    let lines = Input::Lines(crate::jobs::LineSpec {
        argv: vec![serde_bytes::ByteBuf::from(b"py".to_vec())],
        timeout_ms: None,
        term_grace_ms: 1,
        window: 2,
        window_bytes: 3,
    });
    assert_eq!(
        body_hex(&lines),
        ["03000000", "0100000000000000", "02000000000000007079", "00"].concat()
            + "0100000000000000"
            + "02000000"
            + "03000000"
    );
    assert_eq!(
        body_hex(&FromWorker::Broken(Fatal { reason: "z".into() })),
        "05000000010000000000000007a".replace("07a", "7a")
    );
    assert_eq!(body_hex(&Format::Bin), "01000000");
    assert_eq!(body_hex(&Format::Sum), "02000000");
}

#[test]
fn hello_version_is_read_at_a_fixed_offset() {
    let hello = FromWorker::Hello(Hello { version: 99, worker_id: 0, token: [0; 32], pid: 1 });
    let frame = frame_of(&hello);
    assert_eq!(hello_version(&frame[4..]), Some(99));
    assert_eq!(hello_version(&frame_of(&FromWorker::Ready)[4..]), None);
    assert_eq!(hello_version(&[0, 0, 0]), None);
}

#[test]
fn huge_claimed_lengths_are_refused_without_allocating() {
    // A Done that claims a 2^40-byte payload, and a Fatal whose string claims 2^62 bytes.
    let mut body = Vec::new();
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    body.push(0);
    assert!(decode_from_worker(BytesMut::from(&body[..])).is_err());
    let mut body = Vec::new();
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode::<FromWorker>(&body).is_err());
    // An items batch that claims 2^40 items, and one whose only item claims 2^62 bytes.
    let mut body = Vec::new();
    body.extend_from_slice(&5u32.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    assert_eq!(items_batch(&body), None);
    assert!(decode::<ToWorker>(&body).is_err());
    let mut body = Vec::new();
    body.extend_from_slice(&5u32.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert_eq!(items_batch(&body), None);
    assert!(decode::<ToWorker>(&body).is_err());
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut frame = frame_of(&ToWorker::Shutdown);
    frame.put_u8(0);
    assert!(matches!(decode::<ToWorker>(&frame[4..]), Err(CodecError::Trailing(1))));
}

#[test]
fn oversized_frames_are_refused_by_both_writer_and_reader() {
    let payload = vec![0u8; MAX_FRAME];
    let mut dst = BytesMut::new();
    assert!(matches!(write_done_frame(0, 0, &payload, &mut dst), Err(CodecError::TooLarge(_))));
    assert!(dst.is_empty(), "a refused frame leaves nothing behind");
    assert!(matches!(items_frame_head(0, 0, 1, MAX_FRAME), Err(CodecError::TooLarge(_))));
    assert!(matches!(items_frame_head(0, 0, usize::MAX, 0), Err(CodecError::TooLarge(_))));
    assert!(items_frame_head(0, 0, 1, MAX_FRAME - ITEMS_FRAME_OVERHEAD - ITEM_OVERHEAD).is_ok());
    let mut wire = BytesMut::new();
    wire.put_u32_le(u32::MAX);
    wire.put_slice(&[0; 16]);
    assert!(frame_decoder().decode(&mut wire).is_err());
}

#[test]
fn frames_read_back_through_the_length_delimited_codec() {
    let mut wire = BytesMut::new();
    write_frame(&ToWorker::Shutdown, &mut wire).expect("encodes");
    write_done_frame(9, 1, b"81\n", &mut wire).expect("encodes");
    let mut codec = frame_decoder();
    let first = codec.decode(&mut wire).expect("ok").expect("a frame");
    assert_eq!(decode::<ToWorker>(&first).expect("decodes"), ToWorker::Shutdown);
    let second = codec.decode(&mut wire).expect("ok").expect("a frame");
    match decode_from_worker(second).expect("decodes") {
        Incoming::Done { chunk, items, payload } => {
            assert_eq!((chunk, items, &payload[..]), (9, 1, &b"81\n"[..]));
        }
        other => panic!("expected Done, got {other:?}"),
    }
    assert!(!wire.has_remaining());
}

fn arb_from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        (any::<u32>(), any::<u64>(), any::<[u8; 32]>(), any::<u32>()).prop_map(
            |(version, worker_id, token, pid)| FromWorker::Hello(Hello {
                version,
                worker_id,
                token,
                pid
            })
        ),
        Just(FromWorker::Ready),
        ".{0,40}".prop_map(|reason| FromWorker::Fatal(Fatal { reason })),
        (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(chunk, items, payload)| FromWorker::Done(ChunkDone { chunk, items, payload })
        ),
        (any::<u64>(), any::<Option<i64>>(), ".{0,40}").prop_map(|(chunk, item, reason)| {
            FromWorker::Failed(ChunkFailed { chunk, item, reason })
        }),
        ".{0,40}".prop_map(|reason| FromWorker::Broken(Fatal { reason })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(chunk, done)| FromWorker::Progress(UnitProgress { chunk, done })),
        ".{0,40}".prop_map(|reason| FromWorker::NoArena(Fatal { reason })),
    ]
}

fn arb_to_worker() -> impl Strategy<Value = ToWorker> {
    let input = prop_oneof![
        Just(Input::Range(Format::Lines)),
        Just(Input::Range(Format::Bin)),
        Just(Input::Range(Format::Sum)),
        Just(Input::Items),
        (any::<Option<u64>>(), any::<u32>(), ".{0,20}").prop_map(|(timeout_ms, retries, dir)| {
            Input::Jobs(crate::jobs::JobSpec {
                timeout_ms,
                term_grace_ms: 200,
                retries,
                inline_max: 1 << 20,
                spill_dir: serde_bytes::ByteBuf::from(dir.into_bytes()),
            })
        }),
        (proptest::collection::vec(".{0,8}", 1..4), any::<Option<u64>>()).prop_map(
            |(argv, timeout_ms)| Input::Lines(crate::jobs::LineSpec {
                argv: argv
                    .into_iter()
                    .map(|w| serde_bytes::ByteBuf::from(w.into_bytes()))
                    .collect(),
                timeout_ms,
                term_grace_ms: 200,
                window: 64,
                window_bytes: 1 << 16,
            })
        ),
    ];
    let items = proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(serde_bytes::ByteBuf::from),
        0..6,
    );
    prop_oneof![
        ("[a-z-]{0,20}", input)
            .prop_map(|(task, input)| ToWorker::Welcome(Welcome { task, input })),
        (any::<u64>(), any::<u64>(), items)
            .prop_map(|(chunk, first, items)| ToWorker::Items(ItemBatch { chunk, first, items })),
        ".{0,40}".prop_map(|reason| ToWorker::Reject(Reject { reason })),
        (any::<u64>(), any::<i64>(), any::<i64>())
            .prop_map(|(chunk, start, end)| ToWorker::Run(RunChunk { chunk, start, end })),
        Just(ToWorker::Shutdown),
        (any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(chunk, last, bytes)| ToWorker::Body(BodyPiece { chunk, last, bytes })),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<(u64, u64)>(), 0..4)
        )
            .prop_map(|(chunk, first, count, extents)| {
                ToWorker::ItemsAt(ItemsAt { chunk, first, count, extents })
            }),
    ]
}

proptest! {
    #[test]
    fn from_worker_round_trips(msg in arb_from_worker()) {
        let frame = frame_of(&msg);
        prop_assert_eq!(&decode::<FromWorker>(&frame[4..]).expect("decodes"), &msg);
        let fast = decode_from_worker(BytesMut::from(&frame[4..])).expect("decodes");
        match (fast, &msg) {
            (Incoming::Done { chunk, items, payload }, FromWorker::Done(d)) => {
                prop_assert_eq!((chunk, items, &payload[..]), (d.chunk, d.items, &d.payload[..]));
                let mut fast_frame = BytesMut::new();
                write_done_frame(d.chunk, d.items, &d.payload, &mut fast_frame).expect("encodes");
                prop_assert_eq!(&fast_frame[..], &frame[..]);
                // The in-place path a worker uses: room first, payload after, header last.
                let mut in_place = vec![0u8; DONE_PREFIX];
                in_place.extend_from_slice(&d.payload);
                finish_done_frame(&mut in_place, d.chunk, d.items).expect("encodes");
                prop_assert_eq!(&in_place[..], &frame[..]);
            }
            (Incoming::Other(m), _) => prop_assert_eq!(&m, &msg),
            (Incoming::Done { .. }, _) => prop_assert!(false, "fast path took a non-Done"),
        }
    }

    #[test]
    fn to_worker_round_trips(msg in arb_to_worker()) {
        let frame = frame_of(&msg);
        prop_assert_eq!(decode::<ToWorker>(&frame[4..]).expect("decodes"), msg.clone());
        if let ToWorker::Body(p) = &msg {
            // The zero-copy paths: header + bytes is the frame; the in-place read gives back
            // the fields.
            let mut parts = body_piece_header(p.chunk, p.last, p.bytes.len()).expect("fits").to_vec();
            parts.extend_from_slice(&p.bytes);
            prop_assert_eq!(&parts[..], &frame[..]);
            prop_assert_eq!(body_piece(&frame[4..]), Some((p.chunk, p.last, &p.bytes[..])));
        } else {
            prop_assert_eq!(body_piece(&frame[4..]), None);
        }
        if let ToWorker::Items(b) = &msg {
            // Built in place, item by item, it is the same frame; read in place, the same items.
            let mut built = BytesMut::new();
            let mut items_frame = ItemsFrame::begin(&mut built, b.chunk, b.first);
            for item in &b.items {
                let (x, y) = item.split_at(item.len() / 2);
                items_frame.push([x, y]);
            }
            items_frame.finish().expect("fits");
            prop_assert_eq!(&built[..], &frame[..]);
            // Written as parts (the vectored path): head, then each length and item.
            let bytes = b.items.iter().map(|i| i.len()).sum();
            let mut parts = items_frame_head(b.chunk, b.first, b.items.len(), bytes)
                .expect("fits")
                .to_vec();
            for item in &b.items {
                parts.extend_from_slice(&item_length(item.len()));
                parts.extend_from_slice(item);
            }
            prop_assert_eq!(&parts[..], &frame[..]);
            // Items framed already (a run's buffer), pushed in stretches: the same frame.
            let framed = &parts[ITEMS_FRAME_OVERHEAD..];
            let half = b.items.len() / 2;
            let cut = b.items[..half].iter().map(|i| ITEM_OVERHEAD + i.len()).sum::<usize>();
            let mut built = BytesMut::new();
            let mut items_frame = ItemsFrame::begin(&mut built, b.chunk, b.first);
            items_frame.push_framed(&framed[..cut], half);
            items_frame.push_framed(&framed[cut..], b.items.len() - half);
            items_frame.finish().expect("fits");
            prop_assert_eq!(&built[..], &frame[..]);
            let (chunk, first, read) = items_batch(&frame[4..]).expect("an items frame");
            let expected: Vec<&[u8]> = b.items.iter().map(|i| &i[..]).collect();
            prop_assert_eq!((chunk, first, read), (b.chunk, b.first, expected));
        } else {
            prop_assert_eq!(items_batch(&frame[4..]), None);
        }
    }

    #[test]
    fn records_round_trip(results in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..20), 0..8)
    ) {
        let mut payload = Vec::new();
        for r in &results {
            push_record(&mut payload, r);
        }
        prop_assert_eq!(count_records(&payload), Some(results.len() as u64));
        let split = split_records(&Bytes::from(payload.clone())).expect("tiles");
        let split: Vec<Vec<u8>> = split.iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(split, results);
        if !payload.is_empty() {
            payload.pop();
            prop_assert_eq!(count_records(&payload), None);
            prop_assert!(split_records(&Bytes::from(payload)).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::<ToWorker>(&body);
        let _ = decode::<FromWorker>(&body);
        let _ = decode_from_worker(BytesMut::from(&body[..]));
        let _ = hello_version(&body);
        let _ = body_piece(&body);
        let _ = items_batch(&body);
        let _ = split_records(&Bytes::from(body.clone()));
        let _ = crate::jobs::JobCommand::decode(&body);
        let _ = crate::jobs::JobOutcome::decode(&body);
    }
}

/// A user's type with owned strings and bytes at every depth serde can reach: fields, vectors,
/// options, maps, tuples, newtypes and each kind of enum variant.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Deep {
    name: String,
    tags: Vec<String>,
    note: Option<String>,
    raw: serde_bytes::ByteBuf,
    map: std::collections::BTreeMap<String, Vec<u8>>,
    pair: (String, u128, char),
    wrapped: Wrapped,
    shapes: Vec<Shape>,
    nested: Option<Option<Box<Deep>>>,
    unit: Unit,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Wrapped(String);

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Unit;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
enum Shape {
    Empty,
    Named(String),
    Pair(String, i64),
    Labelled { label: String, bytes: serde_bytes::ByteBuf },
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        ".{0,12}".prop_map(Shape::Named),
        (".{0,12}", any::<i64>()).prop_map(|(s, n)| Shape::Pair(s, n)),
        (".{0,12}", prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(label, b)| {
            Shape::Labelled { label, bytes: serde_bytes::ByteBuf::from(b) }
        }),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Deep> {
    (
        ".{0,40}",
        prop::collection::vec(".{0,8}", 0..5),
        prop::option::of(".{0,8}"),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::btree_map(".{0,6}", prop::collection::vec(any::<u8>(), 0..8), 0..4),
        (".{0,8}", any::<u128>(), any::<char>()),
        ".{0,8}",
        prop::collection::vec(arb_shape(), 0..4),
    )
        .prop_map(|(name, tags, note, raw, map, pair, wrapped, shapes)| Deep {
            name,
            tags,
            note,
            raw: serde_bytes::ByteBuf::from(raw),
            map,
            pair,
            wrapped: Wrapped(wrapped),
            shapes,
            nested: None,
            unit: Unit,
        })
}

fn arb_deep() -> impl Strategy<Value = Deep> {
    (arb_leaf(), prop::option::of(prop::option::of(arb_leaf()))).prop_map(|(mut top, inner)| {
        top.nested = inner.map(|o| o.map(Box::new));
        top
    })
}

/// bincode's own decoder, without [`Owning`]: what `decode` must agree with.
fn plain_decode<M: serde::de::DeserializeOwned>(body: &[u8]) -> Option<M> {
    bincode::serde::decode_from_slice::<M, _>(body, CONFIG)
        .ok()
        .filter(|(_, used)| *used == body.len())
        .map(|(m, _)| m)
}

proptest! {
    #[test]
    fn owned_strings_decode_as_bincode_decodes_them(deep in arb_deep(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let body = to_vec(&deep).expect("encodes");
        prop_assert_eq!(decode::<Deep>(&body).ok(), Some(deep.clone()));
        // Cut short or corrupted (a length, a tag, a byte of a string made invalid UTF-8):
        // the same value or the same refusal as bincode's own decoder.
        let short = &body[..cut.index(body.len())];
        prop_assert_eq!(decode::<Deep>(short).ok(), plain_decode::<Deep>(short));
        let mut bad = body.clone();
        let at = flip.0.index(bad.len());
        bad[at] ^= flip.1 | 0x80;
        prop_assert_eq!(decode::<Deep>(&bad).ok(), plain_decode::<Deep>(&bad));
    }
}

#[test]
fn strings_and_byte_buffers_alone_and_invalid_utf8() {
    let s = "héllo wörld".to_owned();
    assert_eq!(decode::<String>(&to_vec(&s).expect("encodes")).expect("decodes"), s);
    let v: Vec<u8> = (0..=255).collect();
    let b = serde_bytes::ByteBuf::from(v.clone());
    let back: serde_bytes::ByteBuf = decode(&to_vec(&b).expect("encodes")).expect("decodes");
    assert_eq!(back.into_vec(), v);
    // A string whose bytes are not UTF-8 is refused, as bincode refuses it.
    let mut body = 2u64.to_le_bytes().to_vec();
    body.extend_from_slice(&[0xc3, 0x28]);
    assert!(decode::<String>(&body).is_err());
    assert!(plain_decode::<String>(&body).is_none());
    // A length past the end is refused before any allocation.
    let mut body = (1u64 << 62).to_le_bytes().to_vec();
    body.push(b'a');
    assert!(decode::<String>(&body).is_err());
}

#[test]
fn every_owned_string_and_buffer_at_any_depth_is_copied_from_a_lent_slice() {
    let leaf = |name: &str| Deep {
        name: name.into(),
        tags: vec!["a".into(), "b".into()],
        note: Some("n".into()),
        raw: serde_bytes::ByteBuf::from(vec![1, 2]),
        map: [("k".to_owned(), vec![3u8])].into_iter().collect(),
        pair: ("p".into(), 7, 'x'),
        wrapped: Wrapped("w".into()),
        shapes: vec![
            Shape::Empty,
            Shape::Named("s".into()),
            Shape::Pair("q".into(), -1),
            Shape::Labelled { label: "l".into(), bytes: serde_bytes::ByteBuf::from(vec![4]) },
        ],
        nested: None,
        unit: Unit,
    };
    // Per leaf: name, 2 tags, note, raw, 1 key, pair's string, wrapped, 3 shape strings and 1
    // shape buffer: 12. The nested leaf sits under two options and a box.
    let mut deep = leaf("top");
    deep.nested = Some(Some(Box::new(leaf("inner"))));
    let body = to_vec(&deep).expect("encodes");
    crate::owning::LENT.set(0);
    assert_eq!(decode::<Deep>(&body).expect("decodes"), deep);
    assert_eq!(crate::owning::LENT.get(), 24);
}
