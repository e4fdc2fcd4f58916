//! User DDL: `CREATE USER | ROLE name [WITH] [PASSWORD 'p' | PASSWORD NULL] [SUPERUSER |
//! CREATEROLE]`, `ALTER USER | ROLE name [WITH] …` with the same options, and `DROP USER | ROLE
//! [IF EXISTS] name, …`. Only administrators run them (42501 otherwise); each runs in a
//! transaction of its own, like other DDL. `root` cannot be dropped or lose its rights.

use sqlparser::ast;

use super::{CommandTag, Session, StatementResult};
use crate::error::{Result, SqlError};
use crate::users::{self, UserRecord, ROOT};
use meridian_security::password::Verifier;

/// What `ALTER USER` asks to change.
#[derive(Default)]
struct Changes {
    /// `Some(None)`: remove the password.
    password: Option<Option<String>>,
    admin: Option<bool>,
}

fn password_text(p: &ast::Password) -> Result<Option<String>> {
    match p {
        ast::Password::NullPassword => Ok(None),
        ast::Password::Password(ast::Expr::Value(v)) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => {
                if s.is_empty() {
                    Err(SqlError::InvalidParameterValue(
                        "a password may not be empty (use PASSWORD NULL to remove one)".into(),
                    ))
                } else {
                    Ok(Some(Verifier::new(s).encode()))
                }
            }
            ast::Value::Null => Ok(None),
            _ => Err(SqlError::Syntax("PASSWORD takes a string literal".into())),
        },
        ast::Password::Password(_) => {
            Err(SqlError::Syntax("PASSWORD takes a string literal".into()))
        }
    }
}

fn admin_option(superuser: Option<bool>, create_role: Option<bool>) -> Option<bool> {
    match (superuser, create_role) {
        (None, None) => None,
        (s, c) => Some(s.unwrap_or(false) || c.unwrap_or(false)),
    }
}

fn one_name(names: &[ast::ObjectName]) -> Result<String> {
    match names {
        [name] => object_name(name),
        _ => Err(SqlError::unsupported(
            "creating several users in one statement",
        )),
    }
}

fn object_name(name: &ast::ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => {
            let name = part
                .as_ident()
                .map(|i| i.value.clone())
                .ok_or_else(|| SqlError::Syntax(format!("{name} is not a user name")))?;
            users::check_name(&name)?;
            Ok(name)
        }
        _ => Err(SqlError::Syntax(format!("{name} is not a user name"))),
    }
}

impl Session {
    /// Refuses user DDL from anyone but an administrator (42501).
    async fn check_admin(&mut self, what: &str) -> Result<()> {
        let user = self.user().to_string();
        let mut txn =
            meridian_kv::Txn::from(self.store.begin_read_only(meridian_kv::ReadBound::Strong));
        let record = users::get(&mut txn, &user).await?;
        if record.is_some_and(|r| r.admin) {
            Ok(())
        } else {
            Err(SqlError::InsufficientPrivilege(format!(
                "{what} needs an administrator; {user} is not one"
            )))
        }
    }

    pub(super) async fn create_role(
        &mut self,
        create: &ast::CreateRole,
    ) -> Result<StatementResult> {
        self.check_ddl_allowed("CREATE USER")?;
        self.check_admin("CREATE USER").await?;
        let name = one_name(&create.names)?;
        let record = UserRecord {
            password: create
                .password
                .as_ref()
                .map(password_text)
                .transpose()?
                .flatten(),
            admin: admin_option(create.superuser, create.create_role).unwrap_or(false),
        };
        let if_not_exists = create.if_not_exists;
        self.change_user(&name, |existing| match existing {
            Some(_) if if_not_exists => Ok(None),
            Some(_) => Err(SqlError::DuplicateObject(format!(
                "user {name} already exists"
            ))),
            None => Ok(Some(Some(record.clone()))),
        })
        .await?;
        Ok(StatementResult::command(CommandTag::CreateRole))
    }

    pub(super) async fn alter_role(
        &mut self,
        name: &ast::Ident,
        operation: &ast::AlterRoleOperation,
    ) -> Result<StatementResult> {
        self.check_ddl_allowed("ALTER USER")?;
        self.check_admin("ALTER USER").await?;
        let name = name.value.clone();
        users::check_name(&name)?;
        let ast::AlterRoleOperation::WithOptions { options } = operation else {
            return Err(SqlError::unsupported(format!("ALTER USER … {operation}")));
        };
        let mut changes = Changes::default();
        for option in options {
            match option {
                ast::RoleOption::Password(p) => changes.password = Some(password_text(p)?),
                ast::RoleOption::SuperUser(b) | ast::RoleOption::CreateRole(b) => {
                    changes.admin = Some(*b)
                }
                ast::RoleOption::Login(_) => {}
                other => return Err(SqlError::unsupported(format!("ALTER USER … {other}"))),
            }
        }
        if name == ROOT && changes.admin == Some(false) {
            return Err(SqlError::InsufficientPrivilege(
                "root stays an administrator".into(),
            ));
        }
        self.change_user(&name, |existing| {
            let Some(mut record) = existing else {
                return Err(SqlError::UndefinedObject(format!(
                    "user {name} does not exist"
                )));
            };
            if let Some(password) = &changes.password {
                record.password = password.clone();
            }
            if let Some(admin) = changes.admin {
                record.admin = admin;
            }
            Ok(Some(Some(record)))
        })
        .await?;
        Ok(StatementResult::command(CommandTag::AlterRole))
    }

    pub(super) async fn drop_roles(
        &mut self,
        names: &[ast::ObjectName],
        if_exists: bool,
    ) -> Result<StatementResult> {
        self.check_ddl_allowed("DROP USER")?;
        self.check_admin("DROP USER").await?;
        let names = names.iter().map(object_name).collect::<Result<Vec<_>>>()?;
        if names.iter().any(|n| n == ROOT) {
            return Err(SqlError::InsufficientPrivilege(
                "root cannot be dropped".into(),
            ));
        }
        for name in &names {
            self.change_user(name, |existing| match existing {
                Some(_) => Ok(Some(None)),
                None if if_exists => Ok(None),
                None => Err(SqlError::UndefinedObject(format!(
                    "user {name} does not exist"
                ))),
            })
            .await?;
        }
        Ok(StatementResult::command(CommandTag::DropRole))
    }

    /// Reads the user `name` in a transaction of its own and writes what `decide` says:
    /// `None` nothing, `Some(Some(record))` the record, `Some(None)` a deletion. Conflicts
    /// are retried ([`super::retrying`]).
    async fn change_user(
        &mut self,
        name: &str,
        decide: impl Fn(Option<UserRecord>) -> Result<Option<Option<UserRecord>>>,
    ) -> Result<()> {
        let decide = &decide;
        let store = self.store.clone();
        super::retrying(|| {
            let store = store.clone();
            async move {
                let mut txn = meridian_kv::Txn::from(store.begin(None));
                let outcome = async {
                    let existing = users::get(&mut txn, name).await?;
                    match decide(existing)? {
                        Some(Some(record)) => users::put(&mut txn, name, &record)?,
                        Some(None) => users::delete(&mut txn, name)?,
                        None => {}
                    }
                    txn.commit().await?;
                    Ok(())
                }
                .await;
                if outcome.is_err() {
                    txn.rollback().await;
                }
                outcome
            }
        })
        .await
    }
}
