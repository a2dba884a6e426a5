//! What `REDUCE`/`NEWOBJ` of a global produce: the few globals a checkpoint needs are
//! interpreted (torch's tensor and parameter rebuild functions, `OrderedDict`, `set`,
//! `_codecs.encode`, ...); every other class or function becomes a generic [`Object`] holding
//! its arguments, so unknown classes (`argparse.Namespace`, optimizer state) never stop loading.
use super::value::{set_items, Budget, Object, TensorRef, Value};
use std::cell::RefCell;
use std::rc::Rc;

type R<T> = Result<T, String>;

/// How deep `_rebuild_from_type_v2` may wrap itself (torch nests it once; a hostile pickle
/// could nest it a million times and overflow the stack).
const MAX_CALL_DEPTH: usize = 16;

/// `REDUCE`/`NEWOBJ`: interprets the globals a checkpoint needs, and makes every other call an
/// [`Object`]. What it copies is charged to `budget`.
pub(crate) fn call(callable: &Value, args: Vec<Value>, budget: &mut Budget) -> R<Value> {
    call_at(callable, args, budget, 0)
}

fn call_at(callable: &Value, args: Vec<Value>, budget: &mut Budget, depth: usize) -> R<Value> {
    let Value::Global(g) = callable else {
        return Ok(object(format!("<{}>", callable.describe()), args));
    };
    let (module, name) = (g.0.as_str(), g.1.as_str());
    // Most calls format `module.name`: a memoized long name must not be copied for free.
    budget.charge(module.len() + name.len())?;
    let builtin = matches!(module, "builtins" | "__builtin__");
    Ok(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            rebuild_tensor(&args, None, budget)?
        }
        ("torch._utils", "_rebuild_tensor_v3") => {
            let dtype = v3_dtype(&args, budget)?;
            rebuild_tensor(&args, Some(dtype), budget)?
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
        | ("torch.nn.parameter", "Parameter" | "Buffer")
            if matches!(args.first(), Some(Value::Tensor(_))) =>
        {
            args.into_iter().next().expect("checked above")
        }
        // A tensor subclass: `func(*args)`, then the subclass and its state (dropped here).
        ("torch._tensor", "_rebuild_from_type_v2") => match (args.first(), args.get(2)) {
            (Some(func), Some(Value::Tuple(inner))) => {
                if depth >= MAX_CALL_DEPTH {
                    return Err("_rebuild_from_type_v2 nested too deep".into());
                }
                budget.charge(inner.len())?;
                call_at(func, inner.to_vec(), budget, depth + 1)?
            }
            _ => object(format!("{module}.{name}"), args),
        },
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
            dict_of(args.first(), budget)?
        }
        (_, "set" | "frozenset" | "list") if builtin => list_of(args.first(), budget)?,
        ("torch", "Size") => tuple_of(args.first(), budget)?,
        (_, "tuple") if builtin => tuple_of(args.first(), budget)?,
        // How protocol 2 pickles Python 3 bytes.
        ("_codecs", "encode") => match args.first() {
            Some(Value::Str(s)) => {
                budget.charge(s.len())?;
                Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())
            }
            _ => object(format!("{module}.{name}"), args),
        },
        ("copyreg" | "copy_reg", "_reconstructor") => match args.first() {
            Some(Value::Global(c)) => {
                budget.charge(c.0.len() + c.1.len() + args.len())?;
                object(format!("{}.{}", c.0, c.1), args[1..].to_vec())
            }
            _ => object(format!("{module}.{name}"), args),
        },
        _ => object(format!("{module}.{name}"), args),
    })
}

/// The dtype argument of `_rebuild_tensor_v3` (a `torch.<dtype>` global), as `module.name`.
fn v3_dtype(args: &[Value], budget: &mut Budget) -> R<String> {
    match args.get(6) {
        Some(Value::Global(d)) => {
            budget.charge(d.0.len() + d.1.len())?;
            Ok(format!("{}.{}", d.0, d.1))
        }
        _ => Err("_rebuild_tensor_v3 without a dtype".into()),
    }
}

/// `dict(pairs)` / `OrderedDict(pairs)` from a list or tuple of pairs (or nothing: empty).
fn dict_of(pairs: Option<&Value>, budget: &mut Budget) -> R<Value> {
    let d = Value::Dict(Rc::default());
    match pairs {
        Some(Value::List(l)) => {
            budget.charge(l.borrow().len())?;
            let pairs: Vec<Value> = l.borrow().clone();
            set_items(&d, pairs_flat(pairs)?, budget)?;
        }
        Some(Value::Tuple(t)) => {
            budget.charge(t.len())?;
            set_items(&d, pairs_flat(t.to_vec())?, budget)?
        }
        _ => {}
    }
    Ok(d)
}

/// `list(seq)`, `set(seq)`, `frozenset(seq)`: a new list of the items of a list or tuple.
fn list_of(seq: Option<&Value>, budget: &mut Budget) -> R<Value> {
    Ok(match seq {
        Some(Value::List(l)) => {
            budget.charge(l.borrow().len())?;
            Value::List(Rc::new(RefCell::new(l.borrow().clone())))
        }
        Some(Value::Tuple(t)) => {
            budget.charge(t.len())?;
            Value::List(Rc::new(RefCell::new(t.to_vec())))
        }
        _ => Value::List(Rc::default()),
    })
}

fn tuple_of(seq: Option<&Value>, budget: &mut Budget) -> R<Value> {
    Ok(match seq {
        Some(Value::Tuple(t)) => Value::Tuple(t.clone()),
        Some(Value::List(l)) => {
            budget.charge(l.borrow().len())?;
            Value::Tuple(Rc::from(l.borrow().clone()))
        }
        _ => Value::Tuple(Rc::from(Vec::new())),
    })
}

fn object(class: String, args: Vec<Value>) -> Value {
    Value::Object(Rc::new(RefCell::new(Object {
        class,
        args,
        state: None,
    })))
}

/// `[(k, v), ...]` to `[k, v, ...]`.
fn pairs_flat(pairs: Vec<Value>) -> R<Vec<Value>> {
    let mut out = Vec::with_capacity(pairs.len() * 2);
    for p in &pairs {
        match p {
            Value::Tuple(t) if t.len() == 2 => out.extend(t.iter().cloned()),
            _ => return Err("OrderedDict items are not (key, value) pairs".into()),
        }
    }
    Ok(out)
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)`
/// and `_rebuild_tensor_v3(..., dtype)`.
fn rebuild_tensor(args: &[Value], dtype: Option<String>, budget: &mut Budget) -> R<Value> {
    let bad = || "malformed _rebuild_tensor arguments".to_string();
    let (Some(Value::Storage(storage)), Some(Value::Int(offset)), Some(size), Some(stride)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Err(bad());
    };
    let mut ints = |v: &Value| -> R<Vec<i64>> {
        let Value::Tuple(t) = v else {
            return Err(bad());
        };
        budget.charge(t.len())?;
        t.iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => Err(bad()),
            })
            .collect()
    };
    let (size, stride) = (ints(size)?, ints(stride)?);
    if size.len() != stride.len() {
        return Err(bad());
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        dtype,
        offset: *offset,
        size,
        stride,
    })))
}
