//! Resolves parsed definitions into what the emitter needs: constants
//! evaluated, typedefs flattened into every use (so each use carries its
//! bound), and procedure enums paired with their _args/_ret/_msg structs.

use std::collections::{HashMap, HashSet};

use super::ast::{Decl, DefKind, Definition, Shape, TypeSpec, Value};
use super::GenError;

/// Rust arrays this long would be a mistake in the .x, not a real layout.
const FIXED_LEN_LIMIT: u32 = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    Bool,
    /// C `char`: one 4-byte word on the wire.
    I8,
    U8,
    I16,
    U16,
}

/// A length limit; `name` is set when it came from a `const` so the
/// generated code can refer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub value: u32,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Prim(Prim),
    /// A struct or union with its own Pack/Unpack impl.
    Named(String),
    String(Bound),
    OpaqueFixed(u32),
    OpaqueVar(Bound),
    ArrayFixed(Box<Ty>, u32),
    ArrayVar(Box<Ty>, Bound),
    Option(Box<Ty>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    pub value: i64,
    pub variant: String,
    pub ty: Option<Ty>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionDef {
    pub unsigned: bool,
    pub arms: Vec<Arm>,
    /// Outer `None`: an unknown discriminant is an error.
    pub default: Option<Option<Ty>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Const(i64),
    Enum(Vec<(String, i64)>),
    Typedef(Ty),
    Struct(Vec<Field>),
    Union(UnionDef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedItem {
    pub name: String,
    pub item: Item,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub number: i32,
    /// The enum item, e.g. `REMOTE_PROC_CONNECT_OPEN`.
    pub const_name: String,
    /// Without the program prefix, e.g. `CONNECT_OPEN`.
    pub name: String,
    pub api: Option<String>,
    pub writes: bool,
    pub event: bool,
    pub args: Option<String>,
    pub ret: Option<String>,
    /// Emit a marker type: the layout is described (possibly as void).
    pub marker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Lower-case prefix, e.g. `remote`.
    pub prefix: String,
    pub program_const: String,
    /// Sorted by number.
    pub procs: Vec<Proc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub items: Vec<NamedItem>,
    pub programs: Vec<Program>,
}

impl Model {
    pub fn get(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name).map(|i| &i.item)
    }
}

pub struct Resolver<'a> {
    defs: HashMap<&'a str, &'a Definition>,
    /// Constants and enum items alike.
    values: HashMap<&'a str, (&'a Value, &'a Definition)>,
}

pub fn build(defs: &[Definition]) -> Result<Model, GenError> {
    let mut r = Resolver {
        defs: HashMap::new(),
        values: HashMap::new(),
    };
    let mut seen = HashSet::new();
    for d in defs {
        let mut names = vec![d.name.as_str()];
        if let DefKind::Enum(items) = &d.kind {
            names.extend(items.iter().map(|i| i.name.as_str()));
        }
        for n in names {
            if !seen.insert(n) {
                return Err(GenError::at(
                    &d.file,
                    d.line,
                    format!("`{n}` is defined twice"),
                ));
            }
        }
        match &d.kind {
            DefKind::Const(v) => {
                r.values.insert(&d.name, (v, d));
            }
            DefKind::Enum(items) => {
                for i in items {
                    r.values.insert(&i.name, (&i.value, d));
                }
                r.defs.insert(&d.name, d);
            }
            _ => {
                r.defs.insert(&d.name, d);
            }
        }
    }

    let mut items = Vec::new();
    for d in defs {
        let item = match &d.kind {
            DefKind::Const(v) => Item::Const(r.eval(v, d, 0)?),
            DefKind::Enum(list) => {
                let mut out = Vec::new();
                for i in list {
                    out.push((i.name.clone(), r.eval(&i.value, d, 0)?));
                }
                Item::Enum(out)
            }
            DefKind::Typedef(decl) => Item::Typedef(r.resolve(decl, d, 0)?),
            DefKind::Struct(fields) => {
                let mut out = Vec::new();
                for f in fields {
                    if out.iter().any(|o: &Field| o.name == f.name) {
                        return Err(GenError::at(
                            &d.file,
                            f.line,
                            format!("field `{}` twice", f.name),
                        ));
                    }
                    out.push(Field {
                        name: f.name.clone(),
                        ty: r.resolve(f, d, 0)?,
                    });
                }
                Item::Struct(out)
            }
            DefKind::Union(u) => Item::Union(super::unions::resolve(&r, u, d)?),
        };
        items.push(NamedItem {
            name: d.name.clone(),
            item,
        });
    }
    let mut model = Model {
        items,
        programs: Vec::new(),
    };
    super::sizes::check(&model, defs)?;
    model.programs = super::procs::collect(&model, defs)?;
    Ok(model)
}

const DEPTH_LIMIT: usize = 64;

impl Resolver<'_> {
    pub fn eval(&self, v: &Value, at: &Definition, depth: usize) -> Result<i64, GenError> {
        match v {
            Value::Lit(n) => Ok(*n),
            Value::Name(name) => {
                if depth > DEPTH_LIMIT {
                    return Err(GenError::at(
                        &at.file,
                        at.line,
                        format!("constant `{name}` refers to itself"),
                    ));
                }
                let (inner, def) = self.values.get(name.as_str()).ok_or_else(|| {
                    GenError::at(&at.file, at.line, format!("unknown constant `{name}`"))
                })?;
                self.eval(inner, def, depth + 1)
            }
        }
    }

    fn bound(&self, v: &Option<Value>, at: &Definition, line: usize) -> Result<Bound, GenError> {
        let Some(v) = v else {
            return Ok(Bound {
                value: u32::MAX,
                name: None,
            });
        };
        let n = self.eval(v, at, 0)?;
        let value = u32::try_from(n).map_err(|_| {
            GenError::at(
                &at.file,
                line,
                format!("limit {n} is not an unsigned 32-bit value"),
            )
        })?;
        // Only plain consts are emitted as u32; enum items are i32.
        let name = match v {
            Value::Name(s) if matches!(self.values.get(s.as_str()), Some((_, d)) if matches!(d.kind, DefKind::Const(_))) => {
                Some(s.clone())
            }
            _ => None,
        };
        Ok(Bound { value, name })
    }

    fn fixed_len(&self, v: &Value, at: &Definition, line: usize) -> Result<u32, GenError> {
        let n = self.eval(v, at, 0)?;
        u32::try_from(n)
            .ok()
            .filter(|&n| n <= FIXED_LEN_LIMIT)
            .ok_or_else(|| GenError::at(&at.file, line, format!("fixed length {n} out of range")))
    }

    fn base(
        &self,
        ty: &TypeSpec,
        at: &Definition,
        line: usize,
        depth: usize,
    ) -> Result<Ty, GenError> {
        let prim = match ty {
            TypeSpec::Int => Prim::I32,
            TypeSpec::UInt => Prim::U32,
            TypeSpec::Hyper => Prim::I64,
            TypeSpec::UHyper => Prim::U64,
            TypeSpec::Float => Prim::F32,
            TypeSpec::Double => Prim::F64,
            TypeSpec::Bool => Prim::Bool,
            TypeSpec::Char => Prim::I8,
            TypeSpec::UChar => Prim::U8,
            TypeSpec::Short => Prim::I16,
            TypeSpec::UShort => Prim::U16,
            TypeSpec::Opaque | TypeSpec::String => {
                return Err(GenError::at(
                    &at.file,
                    line,
                    "opaque and string need a length",
                ))
            }
            TypeSpec::Named(name) => {
                let def = self.defs.get(name.as_str()).ok_or_else(|| {
                    GenError::at(&at.file, line, format!("unknown type `{name}`"))
                })?;
                return match &def.kind {
                    DefKind::Typedef(decl) => {
                        if depth > DEPTH_LIMIT {
                            return Err(GenError::at(
                                &at.file,
                                line,
                                format!("typedef `{name}` refers to itself"),
                            ));
                        }
                        self.resolve(decl, def, depth + 1)
                    }
                    // Values outside the enum are accepted; handlers judge them.
                    DefKind::Enum(_) => Ok(Ty::Prim(Prim::I32)),
                    DefKind::Struct(_) | DefKind::Union(_) => Ok(Ty::Named(name.clone())),
                    DefKind::Const(_) => Err(GenError::at(
                        &at.file,
                        line,
                        format!("`{name}` is a constant, not a type"),
                    )),
                };
            }
        };
        Ok(Ty::Prim(prim))
    }

    pub fn resolve(&self, decl: &Decl, at: &Definition, depth: usize) -> Result<Ty, GenError> {
        let line = decl.line;
        Ok(match (&decl.ty, &decl.shape) {
            (TypeSpec::Opaque, Shape::Fixed(n)) => Ty::OpaqueFixed(self.fixed_len(n, at, line)?),
            (TypeSpec::Opaque, Shape::Var(m)) => Ty::OpaqueVar(self.bound(m, at, line)?),
            (TypeSpec::String, Shape::Var(m)) => Ty::String(self.bound(m, at, line)?),
            (t, Shape::Plain) => self.base(t, at, line, depth)?,
            (t, Shape::Fixed(n)) => Ty::ArrayFixed(
                Box::new(self.base(t, at, line, depth)?),
                self.fixed_len(n, at, line)?,
            ),
            (t, Shape::Var(m)) => Ty::ArrayVar(
                Box::new(self.base(t, at, line, depth)?),
                self.bound(m, at, line)?,
            ),
            (t, Shape::Optional) => Ty::Option(Box::new(self.base(t, at, line, depth)?)),
        })
    }
}
