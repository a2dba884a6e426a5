//! What each opcode does, one function per family of opcodes (as `Lib/pickletools.py` groups
//! them): [`Machine::run`] runs opcodes until `STOP`, asking each family in turn.
use super::opcodes::*;
use super::{call, long_le, set_items, ErrorKind, Machine, StorageRef, Value, R};
use std::cell::RefCell;
use std::rc::Rc;

/// What an opcode did to the machine.
enum Step {
    /// Nothing to push: it changed the stack, the memo or a value in place.
    Next,
    Push(Value),
    /// `STOP`: the pickle's value.
    Stop(Value),
}

/// Runs an opcode of one family; `None` when the opcode is not of that family.
type Family<'a> = fn(&mut Machine<'a>, u8) -> R<Option<Step>>;

impl<'a> Machine<'a> {
    /// Runs opcodes until `STOP`; `op_pos` is the offset of the one running (for errors).
    pub(super) fn run(&mut self, op_pos: &mut usize) -> R<Value> {
        loop {
            *op_pos = self.pos;
            let op = self.u8()?;
            match self.step(op)? {
                Step::Next => {}
                Step::Push(v) => self.stack.push(v),
                Step::Stop(v) => return Ok(v),
            }
        }
    }

    /// Runs one opcode: the first family that knows it does.
    fn step(&mut self, op: u8) -> R<Step> {
        let families: [Family<'a>; 7] = [
            Self::framing,
            Self::stack_and_memo,
            Self::scalar,
            Self::text,
            Self::sequence,
            Self::dict,
            Self::object,
        ];
        for family in families {
            if let Some(step) = family(self, op)? {
                return Ok(step);
            }
        }
        Err(ErrorKind::UnsupportedOpcode(op))
    }

    /// The protocol header, frames and the end.
    fn framing(&mut self, op: u8) -> R<Option<Step>> {
        Ok(Some(match op {
            PROTO => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(ErrorKind::UnsupportedProtocol(proto));
                }
                Step::Next
            }
            // Frames only group opcodes for buffered reading: the whole pickle is in memory.
            FRAME => {
                self.take(8)?;
                Step::Next
            }
            STOP => Step::Stop(self.pop()?),
            _ => return Ok(None),
        }))
    }

    /// Marks, stack manipulation and the memo.
    fn stack_and_memo(&mut self, op: u8) -> R<Option<Step>> {
        match op {
            MARK => {
                let saved = std::mem::take(&mut self.stack);
                self.marks.push(saved);
            }
            POP => {
                self.pop()?;
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => return Ok(Some(Step::Push(self.top()?.clone()))),
            BINPUT => {
                let i = self.u8()? as u32;
                self.memo_put(i)?;
            }
            LONG_BINPUT => {
                let i = self.u32()?;
                self.memo_put(i)?;
            }
            PUT => {
                let i = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                self.memo_put(i)?;
            }
            MEMOIZE => self.memo_put(self.memo.len() as u32)?,
            BINGET => {
                let i = self.u8()? as u32;
                self.memo_get(i)?;
            }
            LONG_BINGET => {
                let i = self.u32()?;
                self.memo_get(i)?;
            }
            GET => {
                let i = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                self.memo_get(i)?;
            }
            _ => return Ok(None),
        }
        Ok(Some(Step::Next))
    }

    /// None, booleans, integers and floats.
    fn scalar(&mut self, op: u8) -> R<Option<Step>> {
        let v = match op {
            NONE => Value::None,
            NEWTRUE => Value::Bool(true),
            NEWFALSE => Value::Bool(false),
            BININT => Value::Int(i32::from_le_bytes(self.arr()?) as i64),
            BININT1 => Value::Int(self.u8()? as i64),
            BININT2 => Value::Int(u16::from_le_bytes(self.arr()?) as i64),
            LONG1 => {
                let n = self.u8()? as u64;
                long_le(self.take(n)?)
            }
            LONG4 => {
                let n = i32::from_le_bytes(self.arr()?);
                let n = u64::try_from(n).map_err(|_| "negative LONG4 length")?;
                long_le(self.take(n)?)
            }
            INT => match self.line()?.trim() {
                "01" => Value::Bool(true),
                "00" => Value::Bool(false),
                s => Value::Int(s.parse().map_err(|_| format!("bad INT `{s}`"))?),
            },
            LONG => match self.line()?.trim().trim_end_matches('L').parse() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::BigInt,
            },
            BINFLOAT => Value::Float(f64::from_be_bytes(self.arr()?)),
            FLOAT => {
                let s = self.line()?;
                Value::Float(s.trim().parse().map_err(|_| format!("bad FLOAT `{s}`"))?)
            }
            _ => return Ok(None),
        };
        Ok(Some(Step::Push(v)))
    }

    /// Strings and bytes of a length given before them.
    fn text(&mut self, op: u8) -> R<Option<Step>> {
        let v = match op {
            BINUNICODE => {
                let n = self.u32()? as u64;
                self.str_arg(n)?
            }
            SHORT_BINUNICODE => {
                let n = self.u8()? as u64;
                self.str_arg(n)?
            }
            BINUNICODE8 => {
                let n = self.u64()?;
                self.str_arg(n)?
            }
            BINBYTES => {
                let n = self.u32()? as u64;
                self.bytes_arg(n)?
            }
            SHORT_BINBYTES => {
                let n = self.u8()? as u64;
                self.bytes_arg(n)?
            }
            BINBYTES8 => {
                let n = self.u64()?;
                self.bytes_arg(n)?
            }
            BINSTRING => {
                let n = i32::from_le_bytes(self.arr()?);
                let n = u64::try_from(n).map_err(|_| "negative BINSTRING length")?;
                self.latin1_arg(n)?
            }
            SHORT_BINSTRING => {
                let n = self.u8()? as u64;
                self.latin1_arg(n)?
            }
            _ => return Ok(None),
        };
        Ok(Some(Step::Push(v)))
    }

    /// Tuples, lists and sets (a set is kept as a list).
    fn sequence(&mut self, op: u8) -> R<Option<Step>> {
        let v = match op {
            EMPTY_TUPLE => Value::Tuple(Rc::from(Vec::new())),
            TUPLE => Value::Tuple(Rc::from(self.pop_mark()?)),
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1) + 1;
                if self.stack.len() < n {
                    return Err(ErrorKind::StackUnderflow);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                Value::Tuple(Rc::from(items))
            }
            EMPTY_LIST | EMPTY_SET => Value::List(Rc::default()),
            LIST | FROZENSET => Value::List(Rc::new(RefCell::new(self.pop_mark()?))),
            APPEND => {
                let v = self.pop()?;
                self.extend(vec![v])?;
                return Ok(Some(Step::Next));
            }
            APPENDS | ADDITEMS => {
                let items = self.pop_mark()?;
                self.extend(items)?;
                return Ok(Some(Step::Next));
            }
            _ => return Ok(None),
        };
        Ok(Some(Step::Push(v)))
    }

    /// Dicts.
    fn dict(&mut self, op: u8) -> R<Option<Step>> {
        Ok(Some(match op {
            EMPTY_DICT => Step::Push(Value::Dict(Rc::default())),
            DICT => {
                let items = self.pop_mark()?;
                let d = Value::Dict(Rc::default());
                set_items(&d, items, &mut self.budget)?;
                Step::Push(d)
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
                Step::Next
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
                Step::Next
            }
            _ => return Ok(None),
        }))
    }

    /// Classes, calls, objects and persistent ids: nothing is executed (see [`call`]).
    fn object(&mut self, op: u8) -> R<Option<Step>> {
        let v = match op {
            GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                Value::Global(Rc::new((module, name)))
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&module, &name) {
                    (Value::Str(m), Value::Str(n)) => {
                        self.budget.charge(m.len() + n.len())?;
                        Value::Global(Rc::new((m.to_string(), n.to_string())))
                    }
                    _ => return Err("STACK_GLOBAL needs two strs".into()),
                }
            }
            REDUCE | NEWOBJ | NEWOBJ_EX => self.call_op(op)?,
            OBJ | INST => self.instantiate(op)?,
            BUILD => {
                let state = self.pop()?;
                if let Value::Object(o) = self.top()? {
                    o.borrow_mut().state = Some(state);
                }
                // Other targets (an OrderedDict's `_metadata`, a tensor's Python
                // attributes) carry nothing a state dict needs.
                return Ok(Some(Step::Next));
            }
            BINPERSID => {
                let pid = self.pop()?;
                self.persistent_load(&pid)?
            }
            PERSID => {
                let pid = self.line()?;
                return Err(format!("unsupported text persistent id `{pid}`").into());
            }
            _ => return Ok(None),
        };
        Ok(Some(Step::Push(v)))
    }

    /// `REDUCE` (callable, args) and `NEWOBJ(_EX)` (class, args[, kwargs]).
    fn call_op(&mut self, op: u8) -> R<Value> {
        if op == NEWOBJ_EX {
            self.pop()?; // keyword arguments
        }
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Tuple(args) = &args else {
            return Err(if op == REDUCE {
                "REDUCE arguments are not a tuple".into()
            } else {
                "NEWOBJ arguments are not a tuple".into()
            });
        };
        self.call(&callable, args)
    }

    /// `OBJ` (class and args after a mark) and `INST` (class named in text, args after a mark).
    fn instantiate(&mut self, op: u8) -> R<Value> {
        if op == OBJ {
            let mut items = self.pop_mark()?;
            if items.is_empty() {
                return Err("OBJ without a class".into());
            }
            let cls = items.remove(0);
            return Ok(call(&cls, items, &mut self.budget)?);
        }
        let module = self.line()?;
        let name = self.line()?;
        let args = self.pop_mark()?;
        let cls = Value::Global(Rc::new((module, name)));
        Ok(call(&cls, args, &mut self.budget)?)
    }

    fn extend(&mut self, items: Vec<Value>) -> R<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            // APPENDS on a generic object (a list subclass): keep the items as its args.
            Value::Object(o) => {
                o.borrow_mut().args.extend(items);
                Ok(())
            }
            v => Err(format!("APPEND to {}", v.describe()).into()),
        }
    }

    /// torch's `persistent_load`: `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&mut self, pid: &Value) -> R<Value> {
        let bad = || ErrorKind::Invalid(format!("unsupported persistent id {}", pid.describe()));
        let Value::Tuple(t) = pid else {
            return Err(bad());
        };
        let [tag, ty, key, _location, numel] = &t[..] else {
            return Err(bad());
        };
        let is_storage = match tag {
            Value::Str(s) => &**s == "storage",
            Value::Bytes(b) => &**b == b"storage",
            _ => false,
        };
        let (Value::Global(ty), Value::Int(numel), true) = (ty, numel, is_storage) else {
            return Err(bad());
        };
        let key = match key {
            Value::Str(s) => {
                self.budget.charge(s.len())?;
                s.to_string()
            }
            Value::Int(i) => i.to_string(),
            _ => return Err(bad()),
        };
        self.budget.charge(ty.0.len() + ty.1.len())?;
        let storage_type = format!("{}.{}", ty.0, ty.1);
        let s = self.storages.entry(key.clone()).or_insert_with(|| {
            Rc::new(StorageRef {
                key,
                storage_type,
                numel: *numel,
            })
        });
        Ok(Value::Storage(s.clone()))
    }
}
