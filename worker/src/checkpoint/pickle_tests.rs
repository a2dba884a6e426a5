//! Tests of `pickle`.
//! One test per opcode family, on hand-assembled pickles; then errors (each a typed
//! [`ErrorKind`] whose message is one line ending with the opcode's position), every opcode
//! byte with arguments of all sizes, and hostile pickles (deep nesting, quadratic work).
use super::*;

/// A Python-like rendering of `v`, to check a result in one assertion. Tensors and
/// storages print their fields, generic objects `<class(args) state=...>`.
fn repr(v: &Value) -> String {
    let list = |items: &[Value]| items.iter().map(repr).collect::<Vec<_>>().join(", ");
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt => "<bigint>".into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("'{s}'"),
        Value::Bytes(b) => format!("b'{}'", b.escape_ascii()),
        Value::Tuple(t) if t.len() == 1 => format!("({},)", repr(&t[0])),
        Value::Tuple(t) => format!("({})", list(t)),
        Value::List(l) => format!("[{}]", list(&l.borrow())),
        Value::Dict(d) => {
            let d = d.borrow();
            let items: Vec<String> = d
                .entries()
                .iter()
                .map(|(k, v)| format!("{}: {}", repr(k), repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Global(g) => format!("<{}.{}>", g.0, g.1),
        Value::Object(o) => {
            let o = o.borrow();
            let state = o.state.as_ref().map(|s| format!(" state={}", repr(s)));
            format!(
                "<{}({}){}>",
                o.class,
                list(&o.args),
                state.unwrap_or_default()
            )
        }
        Value::Storage(s) => format!("<storage {} {} {}>", s.key, s.storage_type, s.numel),
        Value::Tensor(t) => format!(
            "<tensor {} {} {:?} offset={} size={:?} stride={:?}>",
            t.storage.key, t.storage.storage_type, t.dtype, t.offset, t.size, t.stride
        ),
    }
}

/// `repr` of what `p` returns; panics with the error if it fails.
fn run(p: &[u8]) -> String {
    repr(&unpickle(p).unwrap_or_else(|e| panic!("{:?}: {e}", p.escape_ascii().to_string())))
}

/// The error `p` gives; checks its message is one line that ends with the opcode position.
fn fail(p: &[u8]) -> PickleError {
    let Err(e) = unpickle(p) else {
        panic!("{}: unpickled, expected an error", p.escape_ascii())
    };
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.ends_with(&format!(" (opcode at byte {})", e.at)),
        "{msg}"
    );
    assert!(e.at <= p.len(), "{msg}");
    e
}

/// `fail(p)` is an [`ErrorKind::Invalid`] whose message contains `what`.
fn invalid(p: &[u8], what: &str) {
    match fail(p).kind {
        ErrorKind::Invalid(msg) if msg.contains(what) => {}
        k => panic!("{}: {k:?}, expected `{what}`", p.escape_ascii()),
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn protocol_frame_and_stop() {
    assert_eq!(run(b"\x80\x02N."), "None");
    // Protocol 0/1 pickles have no PROTO opcode.
    assert_eq!(run(b"K\x01."), "1");
    // FRAME (protocol 4) only announces a length: skipped.
    assert_eq!(
        run(b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00K\x07."),
        "7"
    );
    // STOP returns the top of the stack.
    assert_eq!(run(b"\x80\x05K\x01K\x02."), "2");
    let e = fail(b"\x80\x06N.");
    assert_eq!((e.kind, e.at), (ErrorKind::UnsupportedProtocol(6), 0));
    for p in [
        &b""[..],
        b"\x80",
        b"\x80\x02N",
        b"\x95\x01\x00",
        b"\x80\x02K",
    ] {
        assert_eq!(fail(p).kind, ErrorKind::Truncated, "{}", p.escape_ascii());
    }
    let e = fail(b"\x80\x02N");
    assert_eq!(e.at, 3);
    assert!(e
        .to_string()
        .starts_with("data.pkl ends before its STOP opcode: truncated"));
    let e = fail(b"\x80\x02.");
    assert_eq!((e.kind, e.at), (ErrorKind::StackUnderflow, 2));
}

#[test]
fn ints_bools_and_none() {
    assert_eq!(run(b"J\xff\xff\xff\xff."), "-1");
    assert_eq!(run(b"J\x00\x00\x00\x80."), "-2147483648");
    assert_eq!(run(b"K\xff."), "255");
    assert_eq!(run(b"M\x00\x01."), "256");
    assert_eq!(run(b"M\xff\xff."), "65535");
    // LONG1: little-endian two's complement of any length.
    assert_eq!(run(b"\x8a\x00."), "0");
    assert_eq!(run(b"\x8a\x01\xff."), "-1");
    assert_eq!(run(b"\x8a\x02\x00\x80."), "-32768");
    assert_eq!(
        run(b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."),
        i64::MIN.to_string()
    );
    assert_eq!(run(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff."), "-1");
    assert_eq!(
        run(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00."),
        "<bigint>"
    );
    assert_eq!(
        run(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."),
        "<bigint>"
    );
    // LONG4.
    assert_eq!(run(b"\x8b\x02\x00\x00\x00\x00\x01."), "256");
    invalid(b"\x8b\xff\xff\xff\xff", "negative LONG4 length");
    // A 2 GB length with nothing behind it: an error, not an allocation.
    assert_eq!(fail(b"\x8b\xff\xff\xff\x7f").kind, ErrorKind::Truncated);
    assert_eq!(fail(b"\x8a\x05\x01").kind, ErrorKind::Truncated);
    // INT and LONG (protocol 0 text).
    assert_eq!(run(b"I42\n."), "42");
    assert_eq!(run(b"I-7\n."), "-7");
    assert_eq!(run(b"I01\n."), "True");
    assert_eq!(run(b"I00\n."), "False");
    invalid(b"Ix\n.", "bad INT `x`");
    assert_eq!(fail(b"I42").kind, ErrorKind::Truncated);
    assert_eq!(run(b"L12L\n."), "12");
    assert_eq!(run(b"L123456789012345678901234567890L\n."), "<bigint>");
    // NEWTRUE, NEWFALSE, NONE.
    assert_eq!(run(b"\x88\x89N\x87."), "(True, False, None)");
    // BININT1/2 and BININT cut short.
    for p in [&b"K"[..], b"M\x01", b"J\x01\x02\x03"] {
        assert_eq!(fail(p).kind, ErrorKind::Truncated);
    }
}

#[test]
fn floats() {
    assert_eq!(run(b"G\x40\x04\x00\x00\x00\x00\x00\x00."), "2.5");
    assert_eq!(run(b"G\xbf\xf0\x00\x00\x00\x00\x00\x00."), "-1.0");
    assert_eq!(run(b"F-0.25\n."), "-0.25");
    invalid(b"Fx\n.", "bad FLOAT `x`");
    assert_eq!(fail(b"G\x40\x04").kind, ErrorKind::Truncated);
}

#[test]
fn strings_and_bytes() {
    assert_eq!(run(b"\x8c\x02hi."), "'hi'");
    assert_eq!(run(b"X\x03\x00\x00\x00h\xc3\xa9."), "'h\u{e9}'");
    assert_eq!(run(b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi."), "'hi'");
    invalid(b"X\x02\x00\x00\x00\xff\xfe.", "invalid UTF-8");
    invalid(b"\x8c\x01\x80.", "invalid UTF-8");
    assert_eq!(run(b"C\x02ab."), "b'ab'");
    assert_eq!(run(b"B\x01\x00\x00\x00\x00."), "b'\\x00'");
    assert_eq!(run(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00z."), "b'z'");
    // BINSTRING and SHORT_BINSTRING (Python 2 str) are read as latin-1.
    assert_eq!(run(b"T\x02\x00\x00\x00\xe9a."), "'\u{e9}a'");
    assert_eq!(run(b"U\x01\xe9."), "'\u{e9}'");
    invalid(b"T\xff\xff\xff\xff", "negative BINSTRING length");
    // Lengths far beyond the data are errors before anything is allocated.
    for p in [
        &b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8d\x00\x00\x00\x00\x00\x00\x00\x80x",
        b"X\xff\xff\xff\xff",
        b"B\xff\xff\xff\xff",
        b"T\xff\xff\xff\x7f",
        b"\x8c\x05hi",
        b"C\x05hi",
        b"U\x05hi",
        b"X\x01\x00",
    ] {
        assert_eq!(fail(p).kind, ErrorKind::Truncated, "{}", p.escape_ascii());
    }
}

#[test]
fn tuples_lists_dicts_and_sets() {
    assert_eq!(run(b")."), "()");
    assert_eq!(run(b"K\x01\x85."), "(1,)");
    assert_eq!(run(b"K\x01K\x02\x86."), "(1, 2)");
    assert_eq!(run(b"K\x01K\x02K\x03\x87."), "(1, 2, 3)");
    assert_eq!(run(b"(K\x01K\x02t."), "(1, 2)");
    assert_eq!(run(b"(t."), "()");
    // EMPTY_LIST + APPEND/APPENDS, LIST.
    assert_eq!(run(b"]K\x01a."), "[1]");
    assert_eq!(run(b"](K\x01K\x02e."), "[1, 2]");
    assert_eq!(run(b"(K\x01l."), "[1]");
    // EMPTY_DICT + SETITEM/SETITEMS, DICT.
    assert_eq!(run(b"}\x8c\x01aK\x01s."), "{'a': 1}");
    assert_eq!(run(b"}(\x8c\x01aK\x01\x8c\x01bK\x02u."), "{'a': 1, 'b': 2}");
    assert_eq!(run(b"(\x8c\x01aK\x01d."), "{'a': 1}");
    // Keys equal in Python are one entry (True == 1), the first key kept, the last value.
    assert_eq!(run(b"}(K\x01K\x02K\x01K\x03\x88K\x04u."), "{1: 4}");
    // EMPTY_SET + ADDITEMS and FROZENSET become lists.
    assert_eq!(run(b"\x8f(K\x01K\x02\x90."), "[1, 2]");
    assert_eq!(run(b"(K\x01\x91."), "[1]");
    // POP, POP_MARK, DUP.
    assert_eq!(run(b"K\x01K\x020."), "1");
    assert_eq!(run(b"K\x01(K\x02K\x031."), "1");
    assert_eq!(run(b"K\x012\x86."), "(1, 1)");
    // Errors.
    assert_eq!(fail(b"t.").kind, ErrorKind::MarkMissing);
    assert_eq!(fail(b"K\x01d.").kind, ErrorKind::MarkMissing);
    assert_eq!(fail(b"K\x01\x86.").kind, ErrorKind::StackUnderflow);
    // What is below a MARK is out of reach until the mark is popped.
    assert_eq!(fail(b"K\x01K\x02(\x86.").kind, ErrorKind::StackUnderflow);
    assert_eq!(fail(b"}K\x01s.").kind, ErrorKind::StackUnderflow);
    assert_eq!(fail(b"(e.").kind, ErrorKind::StackUnderflow);
    assert_eq!(fail(b"0").kind, ErrorKind::StackUnderflow);
    assert_eq!(fail(b"2").kind, ErrorKind::StackUnderflow);
    invalid(b"}(K\x01u.", "SETITEMS with an odd number of items");
    invalid(b"(K\x01d.", "SETITEMS with an odd number of items");
    invalid(b"K\x01K\x02a.", "APPEND to an int (1)");
    invalid(b"K\x01K\x02K\x03s.", "SETITEM on an int (1)");
    let e = fail(b"\x80\x02]K\x01K\x02s.");
    assert_eq!(e.to_string(), "SETITEM on a list (opcode at byte 7)");
}

#[test]
fn memo() {
    // BINPUT/BINGET: the memo holds the list itself, so an item appended later shows
    // through every reference.
    assert_eq!(run(b"]q\x00h\x00K\x01a\x86."), "([1], [1])");
    // LONG_BINPUT/LONG_BINGET.
    assert_eq!(
        run(b"K\x05r\x00\x01\x00\x00j\x00\x01\x00\x00\x86."),
        "(5, 5)"
    );
    // MEMOIZE numbers entries in order.
    assert_eq!(run(b"K\x05\x94K\x06\x94h\x01h\x00\x86."), "(6, 5)");
    // PUT/GET (protocol 0 text).
    assert_eq!(run(b"K\x05p3\nK\x06g3\n\x86."), "(6, 5)");
    // Misses, empty stacks, bad and truncated arguments.
    let e = fail(b"K\x01h\x07.");
    assert_eq!(
        e.to_string(),
        "pickle memo has no entry 7 (opcode at byte 2)"
    );
    assert_eq!((e.kind, e.at), (ErrorKind::MemoMiss(7), 2));
    assert_eq!(fail(b"j\x00\x00\x01\x00").kind, ErrorKind::MemoMiss(65536));
    assert_eq!(fail(b"g9\n").kind, ErrorKind::MemoMiss(9));
    assert_eq!(fail(b"q\x00").kind, ErrorKind::StackUnderflow);
    assert_eq!(fail(b"\x94").kind, ErrorKind::StackUnderflow);
    invalid(b"K\x01px\n", "bad PUT index");
    invalid(b"gx\n", "bad GET index");
    for p in [&b"K\x01q"[..], b"K\x01r\x00\x00", b"h", b"j\x00", b"g1"] {
        assert_eq!(fail(p).kind, ErrorKind::Truncated, "{}", p.escape_ascii());
    }
}

#[test]
fn globals_calls_and_objects() {
    assert_eq!(run(b"cfoo\nBar\n."), "<foo.Bar>");
    assert_eq!(run(b"\x8c\x03foo\x8c\x03Bar\x93."), "<foo.Bar>");
    invalid(b"K\x01K\x02\x93.", "STACK_GLOBAL needs two strs");
    assert_eq!(fail(b"cfoo\nBar").kind, ErrorKind::Truncated);
    // REDUCE of a class it does not know: a generic object keeping its arguments ...
    assert_eq!(run(b"cargparse\nNamespace\n)R."), "<argparse.Namespace()>");
    assert_eq!(run(b"cfoo\nBar\nK\x01\x85R."), "<foo.Bar(1)>");
    // ... and, with BUILD, its state. BUILD on anything else is ignored.
    assert_eq!(
        run(b"cfoo\nBar\n)R}\x8c\x01xK\x01sb."),
        "<foo.Bar() state={'x': 1}>"
    );
    assert_eq!(run(b"}}b."), "{}");
    assert_eq!(fail(b"}b.").kind, ErrorKind::StackUnderflow);
    // NEWOBJ, NEWOBJ_EX (keyword arguments dropped), OBJ, INST.
    assert_eq!(run(b"cfoo\nBar\nK\x01\x85\x81."), "<foo.Bar(1)>");
    assert_eq!(run(b"cfoo\nBar\nK\x01\x85}\x92."), "<foo.Bar(1)>");
    assert_eq!(run(b"(cfoo\nBar\nK\x01o."), "<foo.Bar(1)>");
    assert_eq!(run(b"(K\x01ifoo\nBar\n."), "<foo.Bar(1)>");
    invalid(b"(o.", "OBJ without a class");
    invalid(b"cfoo\nBar\nK\x01R.", "REDUCE arguments are not a tuple");
    invalid(b"cfoo\nBar\nK\x01\x81.", "NEWOBJ arguments are not a tuple");
    assert_eq!(fail(b")R.").kind, ErrorKind::StackUnderflow);
    // Calling something that is not a class still makes an object.
    assert_eq!(run(b"K\x01)R."), "<<an int (1)>()>");
    // The globals that are interpreted.
    let od = b"ccollections\nOrderedDict\n";
    assert_eq!(run(&cat(&[od, b")R\x8c\x01aK\x01s."])), "{'a': 1}");
    assert_eq!(run(&cat(&[od, b"](\x8c\x01aK\x01\x86e\x85R."])), "{'a': 1}");
    assert_eq!(
        run(&cat(&[od, b"\x8c\x01aK\x01\x86\x85\x85R."])),
        "{'a': 1}"
    );
    invalid(
        &cat(&[od, b"](K\x01e\x85R."]),
        "OrderedDict items are not (key, value) pairs",
    );
    assert_eq!(run(b"cbuiltins\nset\n](K\x01e\x85R."), "[1]");
    assert_eq!(run(b"c__builtin__\nfrozenset\n(K\x01t\x85R."), "[1]");
    assert_eq!(run(b"ctorch\nSize\n(K\x02K\x03t\x85R."), "(2, 3)");
    assert_eq!(run(b"cbuiltins\ntuple\n](K\x02e\x85R."), "(2,)");
    // `_codecs.encode(str, "latin1")`: how protocol 2 pickles Python 3 bytes.
    assert_eq!(
        run(b"c_codecs\nencode\n\x8c\x02\xc3\xa9\x8c\x06latin1\x86R."),
        "b'\\xe9'"
    );
    assert_eq!(
        run(b"ccopyreg\n_reconstructor\ncfoo\nBar\ncbuiltins\nobject\nN\x87R."),
        "<foo.Bar(<builtins.object>, None)>"
    );
}

/// `('storage', torch.<ty>, key, 'cpu', numel)` then BINPERSID.
fn pid(ty: &str, key: &[u8], numel: u8) -> Vec<u8> {
    let ty = format!("ctorch\n{ty}\n");
    cat(&[
        b"(\x8c\x07storage",
        ty.as_bytes(),
        key,
        b"\x8c\x03cpuK",
        &[numel],
        b"tQ",
    ])
}

/// `_rebuild_tensor_v2(<storage>, 1, (2, 2), (2, 1), False, OrderedDict())`.
fn tensor_v2() -> Vec<u8> {
    cat(&[
        b"ctorch._utils\n_rebuild_tensor_v2\n(",
        &pid("FloatStorage", b"\x8c\x010", 6),
        b"K\x01(K\x02K\x02t(K\x02K\x01t\x89ccollections\nOrderedDict\n)RtR",
    ])
}

#[test]
fn persistent_ids_and_tensors() {
    let storage = pid("FloatStorage", b"\x8c\x010", 6);
    assert_eq!(
        run(&cat(&[&storage, b"."])),
        "<storage 0 torch.FloatStorage 6>"
    );
    // Python 2 style tag (bytes) and an int key.
    let p = b"(C\x07storagectorch\nHalfStorage\nK\x05\x8c\x03cpuK\x02tQ.";
    assert_eq!(run(p), "<storage 5 torch.HalfStorage 2>");
    // The same key twice is one storage.
    let pair = unpickle(&cat(&[&storage, &storage, b"\x86."])).unwrap();
    let Value::Tuple(t) = &pair else {
        panic!("not a tuple")
    };
    let (Value::Storage(a), Value::Storage(b)) = (&t[0], &t[1]) else {
        panic!("not storages")
    };
    assert!(Rc::ptr_eq(a, b), "one key, two storages");

    let tensor = "<tensor 0 torch.FloatStorage None offset=1 size=[2, 2] stride=[2, 1]>";
    assert_eq!(run(&cat(&[&tensor_v2(), b"."])), tensor);
    // _rebuild_parameter(tensor, requires_grad, hooks) is the tensor.
    let param = cat(&[
        b"ctorch._utils\n_rebuild_parameter\n(",
        &tensor_v2(),
        b"\x88ccollections\nOrderedDict\n)RtR.",
    ]);
    assert_eq!(run(&param), tensor);
    // _rebuild_from_type_v2(func, type, args, state): func(*args).
    let sub = cat(&[
        b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\n",
        b"ctorch\nTensor\n(",
        &storage,
        b"K\x00(K\x06t(K\x01t\x89Nt}tR.",
    ]);
    assert_eq!(
        run(&sub),
        "<tensor 0 torch.FloatStorage None offset=0 size=[6] stride=[1]>"
    );
    // _rebuild_tensor_v3(..., dtype): the dtype overrides the (untyped) storage's.
    let v3 = cat(&[
        b"ctorch._utils\n_rebuild_tensor_v3\n(",
        &pid("storage.UntypedStorage", b"\x8c\x011", 8),
        b"K\x00(K\x04t(K\x01t\x89N",
        b"ctorch\nbfloat16\nt",
    ]);
    assert_eq!(
        run(&cat(&[&v3, b"R."])),
        "<tensor 1 torch.storage.UntypedStorage Some(\"torch.bfloat16\") offset=0 size=[4] \
         stride=[1]>"
    );
    invalid(
        b"ctorch._utils\n_rebuild_tensor_v3\n)R.",
        "_rebuild_tensor_v3 without a dtype",
    );
    // Malformed tensors: no storage, size not a tuple, size and stride of different ranks.
    let rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n(".as_slice();
    for args in [
        &b"K\x00K\x00)))"[..],
        b"!K\x00K\x02)",
        b"!K\x00(K\x02t(t",
        b"!K\x00(\x8c\x01at(K\x01t",
    ] {
        let args = args
            .split(|&b| b == b'!')
            .collect::<Vec<_>>()
            .join(&storage[..]);
        invalid(
            &cat(&[rebuild, &args, b"tR."]),
            "malformed _rebuild_tensor arguments",
        );
    }
    // Persistent ids that are not torch storages.
    invalid(b"K\x01Q.", "unsupported persistent id an int (1)");
    invalid(
        b"(\x8c\x03fooctorch\nFloatStorage\n\x8c\x010\x8c\x03cpuK\x01tQ.",
        "persistent id a tuple",
    );
    invalid(
        b"(\x8c\x07storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpuNtQ.",
        "persistent id a tuple",
    );
    invalid(
        b"(\x8c\x07storage\x8c\x01x\x8c\x010\x8c\x03cpuK\x01tQ.",
        "persistent id a tuple",
    );
    invalid(
        b"(\x8c\x07storagectorch\nFloatStorage\nN\x8c\x03cpuK\x01tQ.",
        "persistent id a tuple",
    );
    invalid(b"P0\n.", "unsupported text persistent id `0`");
    assert_eq!(fail(b"Q").kind, ErrorKind::StackUnderflow);
}

#[test]
fn unsupported_opcodes_are_clean_errors() {
    // STRING, UNICODE, EXT1/2/4, BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER, and non-opcodes.
    for op in [
        b'S', b'V', 0x82, 0x83, 0x84, 0x96, 0x97, 0x98, 0x00, 0xff, b'x', b'\n',
    ] {
        let e = fail(&[b'K', 0x01, op, b'a', b'\n', b'.']);
        assert_eq!((e.kind, e.at), (ErrorKind::UnsupportedOpcode(op), 2));
        assert_eq!(
            fail(&[op]).to_string(),
            format!("unsupported pickle opcode 0x{op:02x} (opcode at byte 0)")
        );
    }
}

#[test]
fn every_opcode_byte_runs_or_fails_cleanly() {
    // Each byte as an opcode, after a few values, with arguments of every size and sign.
    let tails: [&[u8]; 7] = [
        b"",
        b".",
        b"\x00",
        b"\x01\x00\x00\x00\x00\x00\x00\x00a.",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff.",
        b"\x00\x00\x00\x80\x00\x00\x00\x80.",
        b"1\n2\n.",
    ];
    for op in 0..=255u8 {
        for head in [&b""[..], b"\x80\x02", b"}]K\x01", b"(\x8c\x01aK\x01"] {
            for tail in tails {
                let p = cat(&[head, &[op], tail]);
                if let Err(e) = unpickle(&p) {
                    let msg = e.to_string();
                    assert!(
                        !msg.contains('\n') && e.at <= p.len(),
                        "{}: {msg}",
                        p.escape_ascii()
                    );
                }
            }
        }
    }
}

#[test]
fn deep_nesting_neither_overflows_nor_recurses() {
    // 1M nested tuples: dropping them must not recurse (a test thread has a 2 MB stack).
    let deep = cat(&[b")", &vec![0x85; 1 << 20], b"."]);
    let v = unpickle(&deep).unwrap();
    assert!(matches!(&v, Value::Tuple(t) if t.len() == 1));
    drop(v);
    // 200k nested objects, each `Bar(previous)`, memoized along the way.
    let mut deep = b"cfoo\nBar\nq\x00)".to_vec();
    for _ in 0..200_000 {
        deep.extend_from_slice(b"q\x010h\x00h\x01\x85R");
    }
    deep.push(b'.');
    let v = unpickle(&deep).unwrap();
    assert!(matches!(&v, Value::Object(_)));
    drop(v);
    // _rebuild_from_type_v2 nesting itself is cut off before it recurses deep.
    let mut deep = b"ctorch._tensor\n_rebuild_from_type_v2\nq\x00)".to_vec();
    for _ in 0..100_000 {
        deep.extend_from_slice(b"q\x010h\x00Nh\x01\x87");
    }
    deep.extend_from_slice(b"R.");
    invalid(&deep, "_rebuild_from_type_v2 nested too deep");
}

#[test]
fn repeated_copies_of_shared_values_are_bounded() {
    // A 100k-item list, then `set(that list)` 20k times: quadratic without the budget.
    let mut p = cat(&[b"]q\x00(", &vec![b'N'; 100_000], b"ecbuiltins\nset\nq\x01"]);
    for _ in 0..20_000 {
        p.extend_from_slice(b"h\x01h\x00\x85R0");
    }
    p.push(b'.');
    invalid(&p, "copies far more data than its size justifies");
    // A 100 KB key inserted 20k times (each insert hashes it).
    let mut p = cat(&[b"}q\x00X\xa0\x86\x01\x00", &vec![b'k'; 100_000], b"q\x010"]);
    for _ in 0..20_000 {
        p.extend_from_slice(b"h\x00h\x01Ns0");
    }
    p.push(b'.');
    invalid(&p, "copies far more data than its size justifies");
}

/// The budget is far above what real checkpoints use: the golden files' pickles.
#[test]
fn real_checkpoints_use_little_of_the_budget() {
    use std::io::Read;
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden/dit/");
    for (file, pkl) in [
        ("model.pt", "model/data.pkl"),
        ("train-checkpoint.pt", "train-checkpoint/data.pkl"),
    ] {
        let f = std::fs::File::open(format!("{golden}{file}")).unwrap();
        let mut zip = zip::ZipArchive::new(f).unwrap();
        let mut data = Vec::new();
        zip.by_name(pkl).unwrap().read_to_end(&mut data).unwrap();
        let mut m = Machine::new(&data);
        assert!(matches!(m.unpickle(), Ok(Value::Dict(_))), "{file}");
        let used = Budget::new(data.len()).left() - m.budget.left();
        // A few units per byte, of the sixteen per byte (plus a base) allowed.
        assert!(
            used < 3 * data.len() as u64,
            "{file}: {used} for {} bytes",
            data.len()
        );
    }
}

#[test]
fn long_le_edge_cases() {
    assert!(matches!(long_le(&[]), Value::Int(0)));
    assert!(matches!(long_le(&[0xff]), Value::Int(-1)));
    assert!(matches!(long_le(&[0x00, 0x01]), Value::Int(256)));
    assert!(matches!(long_le(&[0; 9]), Value::Int(0)));
    assert!(matches!(long_le(&[1; 10]), Value::BigInt));
}

#[test]
fn a_protocol_2_dict() {
    // `{"a": [1, 2.5, None, True]}` as Python writes it.
    let p =
        b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88es.";
    assert_eq!(run(p), "{'a': [1, 2.5, None, True]}");
}
