//! A minimal pickle virtual machine for the `data.pkl` entry of `torch.save` zip checkpoints.
//!
//! Written by hand because no existing Rust crate handles what torch writes: persistent ids
//! (`BINPERSID`) naming the storages kept in `data/<key>`, `REDUCE` of torch's rebuild functions,
//! and arbitrary classes (`argparse.Namespace`, optimizer state, ...) that must not stop loading.
//!
//! It runs the opcodes of protocols 2 to 5 that plain Python data produces (no out-of-band
//! buffers) plus the text opcodes of protocols 0/1 that are cheap to support. Nothing is
//! executed: a handful of known globals (`OrderedDict`, torch's tensor and parameter rebuild
//! functions, `_codecs.encode`, ...) are interpreted, and every other call or instantiation
//! becomes a generic [`Value::Object`] (see [`super::globals`]). Tensors are not read here: a
//! tensor is a [`super::value::TensorRef`] (storage key, dtype, offset, size, stride) that
//! `torch_zip` materializes on demand, so the parts of a checkpoint nobody uses (optimizer
//! moments, the non-EMA model) cost no memory.
//!
//! This file holds the machine (stack, marks, memo) and how it reads arguments; `pickle/ops.rs`
//! what each opcode does, one function per family; `pickle/opcodes.rs` names the opcodes as
//! CPython's `pickle.py` does.
//!
//! `data.pkl` is untrusted: every length is checked against the bytes left before anything is
//! allocated, what copying shared (memoized) values costs is bounded by a [`Budget`], values
//! drop without recursion however deep they nest, and every failure is a [`PickleError`]
//! (`tests/engine_pickle_fuzz.rs` runs thousands of damaged checkpoints through the reader).
mod opcodes;
mod ops;

use super::globals::call;
use super::value::{set_items, Budget, StorageRef, Value};
use std::collections::HashMap;
use std::rc::Rc;

/// Runs the pickle `data` and returns the value its `STOP` opcode returns.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    Machine::new(data).unpickle()
}

/// Why a pickle could not be run, and where. Its message is one line (strings quoted from the
/// pickle may hold control characters: `super::error` escapes them).
#[derive(Debug, thiserror::Error)]
#[error("{kind} (opcode at byte {at})")]
pub(crate) struct PickleError {
    pub kind: ErrorKind,
    /// Offset of the opcode that failed.
    pub at: usize,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum ErrorKind {
    /// The data ends inside an opcode or its argument, or before `STOP`.
    #[error(
        "data.pkl ends before its STOP opcode: truncated or not a complete PyTorch checkpoint"
    )]
    Truncated,
    #[error("unsupported pickle protocol {0}")]
    UnsupportedProtocol(u8),
    /// An opcode this reader does not implement, or no opcode at all.
    #[error("unsupported pickle opcode 0x{0:02x}")]
    UnsupportedOpcode(u8),
    #[error("pickle stack underflow")]
    StackUnderflow,
    #[error("pickle MARK missing")]
    MarkMissing,
    #[error("pickle memo has no entry {0}")]
    MemoMiss(u32),
    /// Anything else: an opcode given values or an argument it cannot take.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ErrorKind {
    fn from(msg: String) -> Self {
        ErrorKind::Invalid(msg)
    }
}

impl From<&str> for ErrorKind {
    fn from(msg: &str) -> Self {
        ErrorKind::Invalid(msg.into())
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stacks saved by `MARK` (the current stack holds what was pushed since the last mark).
    marks: Vec<Vec<Value>>,
    memo: HashMap<u32, Value>,
    /// Storages by key, so tensors that share a storage share one `StorageRef`.
    storages: HashMap<String, Rc<StorageRef>>,
    /// What copying shared values may still cost (see [`Budget`]).
    budget: Budget,
}

type R<T> = Result<T, ErrorKind>;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Machine<'a> {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
            budget: Budget::new(data.len()),
        }
    }
    fn unpickle(&mut self) -> Result<Value, PickleError> {
        let mut at = 0;
        self.run(&mut at).map_err(|kind| PickleError { kind, at })
    }
    fn take(&mut self, n: u64) -> R<&[u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(ErrorKind::Truncated);
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        Ok(self
            .take(N as u64)?
            .try_into()
            .expect("take returns N bytes"))
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A newline-terminated text argument (protocol 0 opcodes, `GLOBAL`).
    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(ErrorKind::Truncated)?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn str_arg(&mut self, n: u64) -> R<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "invalid UTF-8 in a pickled str")?;
        Ok(Value::Str(Rc::from(s)))
    }
    fn bytes_arg(&mut self, n: u64) -> R<Value> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }
    fn latin1_arg(&mut self, n: u64) -> R<Value> {
        let s: String = self.take(n)?.iter().map(|&b| b as char).collect();
        Ok(Value::Str(Rc::from(s)))
    }
    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or(ErrorKind::StackUnderflow)
    }
    fn top(&mut self) -> R<&mut Value> {
        self.stack.last_mut().ok_or(ErrorKind::StackUnderflow)
    }
    /// `SETITEM(S)` into the value on top of the stack.
    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        let top = self.stack.last().ok_or(ErrorKind::StackUnderflow)?;
        Ok(set_items(top, items, &mut self.budget)?)
    }
    /// Calls `callable` (see [`call`]) with a copy of `args`.
    fn call(&mut self, callable: &Value, args: &[Value]) -> R<Value> {
        self.budget.charge(args.len())?;
        Ok(call(callable, args.to_vec(), &mut self.budget)?)
    }
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let saved = self.marks.pop().ok_or(ErrorKind::MarkMissing)?;
        Ok(std::mem::replace(&mut self.stack, saved))
    }
    fn memo_put(&mut self, i: u32) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> R<()> {
        let v = self.memo.get(&i).cloned();
        self.stack.push(v.ok_or(ErrorKind::MemoMiss(i))?);
        Ok(())
    }
}

/// A little-endian two's complement integer (`LONG1`/`LONG4`).
fn long_le(b: &[u8]) -> Value {
    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
        return Value::BigInt;
    }
    let mut buf = [fill; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(buf);
    if b.len() > 8 && (v < 0) != negative {
        return Value::BigInt;
    }
    Value::Int(v)
}

#[cfg(test)]
#[path = "pickle_tests.rs"]
mod tests;
