//! The Python values the pickle VM builds from a `torch.save` checkpoint's `data.pkl`.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// One Python value. Mutable containers are shared (`Rc<RefCell<_>>`) as they are in Python,
/// so that a memoized list or dict sees the items appended after it was memoized.
#[derive(Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits (its value is not kept).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    /// Lists, and also sets and frozensets.
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Dict>>),
    /// A class or function named by `GLOBAL`/`STACK_GLOBAL`: `(module, name)`.
    Global(Rc<(String, String)>),
    Object(Rc<RefCell<Object>>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

/// An instance of a class this VM does not interpret.
pub(crate) struct Object {
    /// `module.name` of its class or factory function.
    pub class: String,
    pub args: Vec<Value>,
    /// What `BUILD` set (usually its `__dict__`).
    pub state: Option<Value>,
}

/// An insertion-ordered dict; string and integer keys are deduplicated like Python's.
#[derive(Default)]
pub(crate) struct Dict {
    entries: Vec<(Value, Value)>,
    index: HashMap<HashKey, usize>,
}

#[derive(PartialEq, Eq, Hash)]
enum HashKey {
    Str(Rc<str>),
    Int(i64),
}

impl Dict {
    pub(crate) fn insert(&mut self, key: Value, value: Value) {
        let hk = match &key {
            Value::Str(s) => Some(HashKey::Str(s.clone())),
            Value::Int(i) => Some(HashKey::Int(*i)),
            Value::Bool(b) => Some(HashKey::Int(*b as i64)),
            _ => None,
        };
        if let Some(hk) = hk {
            if let Some(&i) = self.index.get(&hk) {
                self.entries[i].1 = value;
                return;
            }
            self.index.insert(hk, self.entries.len());
        }
        self.entries.push((key, value));
    }
    pub(crate) fn get_str(&self, key: &str) -> Option<&Value> {
        let i = *self.index.get(&HashKey::Str(Rc::from(key)))?;
        Some(&self.entries[i].1)
    }
    pub(crate) fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }
}

/// A storage named by a persistent id `('storage', <storage type>, key, location, numel)`.
pub(crate) struct StorageRef {
    /// The name of its entry under `<archive>/data/`.
    pub key: String,
    /// `module.name` of the storage type, e.g. `torch.FloatStorage` or
    /// `torch.storage.UntypedStorage`.
    pub storage_type: String,
    /// Number of elements of the storage type (bytes for `UntypedStorage`).
    pub numel: i64,
}

/// A tensor as `torch._utils._rebuild_tensor_v2/v3` describes it, not yet read.
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    /// `module.name` of the dtype given by `_rebuild_tensor_v3` (e.g. `torch.uint16`); `None`
    /// when the storage type implies it.
    pub dtype: Option<String>,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

impl Value {
    /// What the value is, for error messages ("a list", "an `argparse.Namespace` object").
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("a bool ({})", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("an int ({i})"),
            Value::BigInt => "an int".into(),
            Value::Float(f) => format!("a float ({f})"),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("the class `{}.{}`", g.0, g.1),
            Value::Object(o) => format!("a `{}` object", o.borrow().class),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }
}

/// `SETITEM(S)`: key/value pairs into the dict on top of the stack.
pub(crate) fn set_items(
    target: &Value,
    items: Vec<Value>,
    budget: &mut Budget,
) -> Result<(), String> {
    if items.len() & 1 != 0 {
        return Err("SETITEMS with an odd number of items".into());
    }
    match target {
        Value::Dict(d) => {
            let mut d = d.borrow_mut();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                // Inserting hashes a str key: a memoized long key inserted over and over would
                // cost time quadratic in the pickle's size.
                budget.charge(1 + if let Value::Str(s) = &k { s.len() } else { 0 })?;
                d.insert(k, v);
            }
            Ok(())
        }
        // A dict subclass we don't know: keep the pairs as its args.
        Value::Object(o) => {
            o.borrow_mut().args.extend(items);
            Ok(())
        }
        v => Err(format!("SETITEM on {}", v.describe())),
    }
}

/// Bounds the work a pickle may ask for beyond reading itself. Values are shared, so the memo
/// lets a small pickle name a big list, str or tuple again and again; every operation that
/// copies or hashes one (a call's arguments, `set(list)`, a dict key, a class name) is charged
/// here, so that a hostile `data.pkl` errors out instead of taking quadratic time and memory.
/// Real checkpoints copy each value a few times at most: they use a small fraction of it.
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    /// Copies per byte of pickle allowed, on top of [`Budget::BASE`].
    const PER_BYTE: u64 = 16;
    const BASE: u64 = 1 << 20;

    /// The budget of a pickle of `len` bytes.
    pub(crate) fn new(len: usize) -> Budget {
        Budget {
            left: Self::BASE + Self::PER_BYTE * len as u64,
        }
    }
    /// Takes `n` units (values copied or bytes copied or hashed) from the budget.
    pub(crate) fn charge(&mut self, n: usize) -> Result<(), String> {
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(
                "the pickle copies far more data than its size justifies (it refers to \
                         the same values over and over): corrupt or malicious file"
                    .into(),
            ),
        }
    }
    #[cfg(test)]
    pub(crate) fn left(&self) -> u64 {
        self.left
    }
}

/// Drops nested values with a loop instead of recursion: a pickle of a few MB can nest tuples,
/// lists or dicts a million deep (`TUPLE1` is one byte), which a recursive drop would overflow
/// the stack with (an abort, not an error).
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut v) = pending.pop() {
            v.take_children(&mut pending);
            // `v` drops here with its children already moved out: no recursion.
        }
    }
}

impl Value {
    /// Moves the values this one alone owns into `out` (shared containers are left alone: the
    /// last owner's drop takes their children).
    fn take_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(t) => {
                if let Some(items) = Rc::get_mut(t) {
                    out.extend(
                        items
                            .iter_mut()
                            .filter(|v| v.may_nest())
                            .map(|v| std::mem::replace(v, Value::None)),
                    );
                }
            }
            Value::List(l) => {
                if let Some(l) = Rc::get_mut(l) {
                    out.append(l.get_mut());
                }
            }
            Value::Dict(d) => {
                if let Some(d) = Rc::get_mut(d) {
                    let d = d.get_mut();
                    d.index.clear();
                    for (k, v) in d.entries.drain(..) {
                        out.push(k);
                        out.push(v);
                    }
                }
            }
            Value::Object(o) => {
                if let Some(o) = Rc::get_mut(o) {
                    let o = o.get_mut();
                    out.append(&mut o.args);
                    out.extend(o.state.take());
                }
            }
            _ => {}
        }
    }
    fn may_nest(&self) -> bool {
        matches!(
            self,
            Value::Tuple(_) | Value::List(_) | Value::Dict(_) | Value::Object(_)
        )
    }
}
