//! CREATE TABLE → [`TableDesc`], SQL type names → [`DataType`], and the split points of
//! `ALTER TABLE … SPLIT AT VALUES …`.

use sqlparser::ast;

use super::{ident_name, table_name, Binder};
use crate::catalog::{ColumnDesc, TableDesc, TableSet};
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::plan::Plan;
use crate::types::DataType;

/// The name of the generated key column of a table declared without a primary key.
pub const ROWID_COLUMN: &str = "rowid";

/// Converts a SQL type name. FLOAT(p) is REAL for p <= 24 and DOUBLE PRECISION above, as in
/// PostgreSQL; CHAR(n), NUMERIC, dates and the rest are not supported yet.
pub fn convert_data_type(ty: &ast::DataType) -> Result<DataType> {
    use ast::DataType as A;
    Ok(match ty {
        A::Bool | A::Boolean => DataType::Bool,
        A::SmallInt(_) | A::Int2(_) => DataType::Int2,
        A::Int(_) | A::Int4(_) | A::Integer(_) => DataType::Int4,
        A::BigInt(_) | A::Int8(_) => DataType::Int8,
        A::Real | A::Float4 => DataType::Float4,
        A::Float8 | A::DoublePrecision | A::Double(ast::ExactNumberInfo::None) => DataType::Float8,
        A::Float(info) => match info {
            ast::ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float4,
            _ => DataType::Float8,
        },
        A::Text | A::String(None) => DataType::Text,
        A::Varchar(len) | A::CharacterVarying(len) | A::CharVarying(len) => match len {
            None | Some(ast::CharacterLength::Max) => DataType::Varchar(None),
            Some(ast::CharacterLength::IntegerLength { length, .. }) => {
                let n = u32::try_from(*length)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        SqlError::InvalidParameterValue(format!(
                            "length for type varchar must be between 1 and {}",
                            u32::MAX
                        ))
                    })?;
                DataType::Varchar(Some(n))
            }
        },
        A::Bytea => DataType::Bytea,
        A::Custom(name, modifiers) if modifiers.is_empty() => {
            match name.to_string().to_lowercase().as_str() {
                "int2" => DataType::Int2,
                "int4" => DataType::Int4,
                "int8" => DataType::Int8,
                "float4" => DataType::Float4,
                "float8" => DataType::Float8,
                "bool" => DataType::Bool,
                "text" => DataType::Text,
                "varchar" => DataType::Varchar(None),
                "bytea" => DataType::Bytea,
                other => return Err(SqlError::unsupported(format!("type {other}"))),
            }
        }
        other => return Err(SqlError::unsupported(format!("type {other}"))),
    })
}

/// The descriptor a CREATE TABLE describes, with `id` 0 (the session allocates the id) and
/// whether IF NOT EXISTS was given.
pub fn bind_create_table(create: &ast::CreateTable) -> Result<(TableDesc, bool)> {
    if create.or_replace || create.temporary || create.external || create.unlogged {
        return Err(SqlError::unsupported(
            "CREATE OR REPLACE / TEMPORARY / EXTERNAL / UNLOGGED TABLE",
        ));
    }
    if create.query.is_some() {
        return Err(SqlError::unsupported("CREATE TABLE AS"));
    }
    if create.like.is_some()
        || create.clone.is_some()
        || create.inherits.is_some()
        || create.partition_of.is_some()
        || create.partition_by.is_some()
    {
        return Err(SqlError::unsupported(
            "CREATE TABLE LIKE / CLONE / INHERITS / PARTITION",
        ));
    }
    let name = table_name(&create.name)?;
    let mut columns: Vec<ColumnDesc> = Vec::new();
    let mut primary_key: Option<Vec<usize>> = None;
    let mut set_primary_key = |pk: Vec<usize>| {
        if primary_key.is_some() {
            return Err(SqlError::InvalidTableDefinition(format!(
                "multiple primary keys for table \"{name}\" are not allowed"
            )));
        }
        primary_key = Some(pk);
        Ok(())
    };

    for (position, def) in create.columns.iter().enumerate() {
        let column_name = ident_name(&def.name);
        if columns.iter().any(|c| c.name == column_name) {
            return Err(SqlError::DuplicateColumn(column_name));
        }
        let data_type = convert_data_type(&def.data_type)?;
        let mut nullable = true;
        for option in &def.options {
            match &option.option {
                ast::ColumnOption::Null => nullable = true,
                ast::ColumnOption::NotNull => nullable = false,
                ast::ColumnOption::PrimaryKey(_) => set_primary_key(vec![position])?,
                ast::ColumnOption::Comment(_) => {}
                ast::ColumnOption::Default(_) => {
                    return Err(SqlError::unsupported("DEFAULT column values"))
                }
                ast::ColumnOption::Unique(_) => {
                    return Err(SqlError::unsupported("UNIQUE constraints"))
                }
                ast::ColumnOption::ForeignKey(_) => {
                    return Err(SqlError::unsupported("foreign keys"))
                }
                ast::ColumnOption::Check(_) => {
                    return Err(SqlError::unsupported("CHECK constraints"))
                }
                other => return Err(SqlError::unsupported(format!("column option {other}"))),
            }
        }
        columns.push(ColumnDesc {
            id: u32::try_from(position + 1)
                .map_err(|_| SqlError::unsupported("that many columns"))?,
            name: column_name,
            data_type,
            nullable,
            hidden: false,
        });
    }

    for constraint in &create.constraints {
        match constraint {
            ast::TableConstraint::PrimaryKey(pk) => {
                let mut positions = Vec::with_capacity(pk.columns.len());
                for index_column in &pk.columns {
                    let ast::Expr::Identifier(id) = &index_column.column.expr else {
                        return Err(SqlError::unsupported("expressions in PRIMARY KEY"));
                    };
                    if matches!(
                        index_column.column.options.sort,
                        Some(ast::OrderBySort::Desc)
                    ) {
                        return Err(SqlError::unsupported("descending primary key columns"));
                    }
                    let column_name = ident_name(id);
                    let position = columns
                        .iter()
                        .position(|c| c.name == column_name)
                        .ok_or_else(|| SqlError::UndefinedColumn(column_name.clone()))?;
                    if positions.contains(&position) {
                        return Err(SqlError::DuplicateColumn(column_name));
                    }
                    positions.push(position);
                }
                set_primary_key(positions)?;
            }
            ast::TableConstraint::Unique(_) => {
                return Err(SqlError::unsupported("UNIQUE constraints"))
            }
            ast::TableConstraint::ForeignKey(_) => {
                return Err(SqlError::unsupported("foreign keys"))
            }
            ast::TableConstraint::Check(_) => {
                return Err(SqlError::unsupported("CHECK constraints"))
            }
            other => return Err(SqlError::unsupported(format!("constraint {other}"))),
        }
    }

    let primary_key = match primary_key {
        Some(pk) => {
            for &i in &pk {
                if let Some(c) = columns.get_mut(i) {
                    c.nullable = false;
                }
            }
            pk
        }
        None => {
            // No declared key: a hidden INT8 row id, filled in on insert from the cluster's
            // unique-id counter (`meridian_kv::unique_ids`).
            let mut rowid_name = ROWID_COLUMN.to_string();
            while columns.iter().any(|c| c.name == rowid_name) {
                rowid_name.push('_');
            }
            columns.push(ColumnDesc {
                id: u32::try_from(columns.len() + 1)
                    .map_err(|_| SqlError::unsupported("that many columns"))?,
                name: rowid_name,
                data_type: DataType::Int8,
                nullable: false,
                hidden: true,
            });
            vec![columns.len() - 1]
        }
    };
    let next_column_id =
        u32::try_from(columns.len() + 1).map_err(|_| SqlError::unsupported("that many columns"))?;
    Ok((
        TableDesc {
            id: 0,
            name,
            columns,
            primary_key,
            next_column_id,
        },
        create.if_not_exists,
    ))
}

/// The split points of `ALTER TABLE … SPLIT AT VALUES …`, bound against a table's primary key.
#[derive(Debug, Clone)]
pub struct BoundSplitPoints {
    /// One row per split point: constant expressions (parameters allowed) typed as the leading
    /// primary key columns, in key order.
    pub rows: Vec<Vec<ScalarExpr>>,
    /// The type of each parameter `$1..$n`.
    pub param_types: Vec<DataType>,
}

/// Binds the rows of `ALTER TABLE table SPLIT AT values` like an INSERT into the table's first
/// primary key columns: each row may name a prefix of the key (all rows the same length),
/// untyped literals and parameters take the key column's type (`'abc'` for an INT is 22P02),
/// and typed values must be assignable to it (42804). More values than key columns is 42804.
pub fn bind_split_points(
    table: &TableDesc,
    values: &ast::Values,
    param_types: &[DataType],
) -> Result<BoundSplitPoints> {
    let key_columns: Vec<(DataType, String)> = table
        .primary_key
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .map(|c| (c.data_type, c.name.clone()))
        .collect();
    let width = values.rows.first().map_or(0, |r| r.content.len());
    if width == 0 || width > key_columns.len() {
        return Err(SqlError::DatatypeMismatch(format!(
            "SPLIT AT data has {width} columns but the primary key of \"{}\" has {} ({})",
            table.name,
            key_columns.len(),
            key_columns
                .iter()
                .map(|(_, name)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let no_tables = TableSet::new();
    let mut binder = Binder {
        tables: &no_tables,
        params: param_types.to_vec(),
    };
    let (plan, _) = binder.bind_values(values, &key_columns[..width])?;
    let Plan::Values { rows } = plan else {
        return Err(SqlError::Internal("VALUES bound to something else".into()));
    };
    Ok(BoundSplitPoints {
        rows,
        param_types: binder.params.iter().map(|t| t.or_text()).collect(),
    })
}
