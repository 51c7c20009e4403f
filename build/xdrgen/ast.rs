//! What the parser produces: the .x file as written, names unresolved.

/// A constant expression: XDR only allows a literal or a constant's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Lit(i64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSpec {
    Int,
    UInt,
    Hyper,
    UHyper,
    Float,
    Double,
    Bool,
    Char,
    UChar,
    Short,
    UShort,
    /// Only valid with `[N]` or `<N>`.
    Opaque,
    /// Only valid with `<N>`.
    String,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Plain,
    Fixed(Value),
    /// `None` for `<>`: no limit but the message size.
    Var(Option<Value>),
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decl {
    pub name: String,
    pub ty: TypeSpec,
    pub shape: Shape,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumItem {
    pub name: String,
    pub value: Value,
    /// Text of a comment on the same line, after the item.
    pub note: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionArm {
    pub labels: Vec<Value>,
    /// `None` for `void`.
    pub decl: Option<Decl>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Union {
    pub discriminant: Decl,
    pub arms: Vec<UnionArm>,
    /// Outer `None`: no default arm; inner `None`: `default: void`.
    pub default: Option<Option<Decl>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefKind {
    Const(Value),
    Enum(Vec<EnumItem>),
    Typedef(Decl),
    Struct(Vec<Decl>),
    Union(Union),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub kind: DefKind,
    pub file: String,
    pub line: usize,
}
