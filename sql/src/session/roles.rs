//! User DDL: `CREATE USER | ROLE name [WITH] [PASSWORD 'p' | PASSWORD NULL] [SUPERUSER |
//! CREATEROLE]`, `ALTER USER | ROLE name [WITH] …` with the same options, and `DROP USER | ROLE
//! [IF EXISTS] name, …`. Only administrators run them (42501 otherwise); each runs in a
//! transaction of its own, like other DDL. `root` cannot be dropped or lose its rights.

use sqlparser::ast;

use super::{CommandTag, Session, StatementResult};
use crate::error::{Result, SqlError};
use crate::schema;
use crate::users::{self, Privileges, UserRecord, ROOT};
use futures::future::BoxFuture;
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
                .map(crate::binder::ident_name)
                .ok_or_else(|| SqlError::Syntax(format!("{name} is not a user name")))?;
            users::check_name(&name)?;
            Ok(name)
        }
        _ => Err(SqlError::Syntax(format!("{name} is not a user name"))),
    }
}

impl Session {
    /// Refuses access DDL from anyone but an administrator (42501).
    pub(super) async fn check_admin(&mut self, what: &str) -> Result<()> {
        self.schema.current().await?.check_admin(&self.user, what)
    }

    pub(super) async fn create_role(
        &mut self,
        create: &ast::CreateRole,
    ) -> Result<StatementResult> {
        self.check_ddl_allowed("CREATE USER")?;
        self.check_admin("CREATE USER").await?;
        let name = one_name(&create.names)?;
        let record = UserRecord {
            name: name.clone(),
            password: create
                .password
                .as_ref()
                .map(password_text)
                .transpose()?
                .flatten(),
            admin: admin_option(create.superuser, create.create_role).unwrap_or(false),
        };
        let if_not_exists = create.if_not_exists;
        self.access_ddl(move |txn| {
            let (name, record) = (name.clone(), record.clone());
            Box::pin(async move {
                match users::get(txn, &name).await? {
                    Some(_) if if_not_exists => Ok(false),
                    Some(_) => Err(SqlError::DuplicateObject(format!(
                        "user {name} already exists"
                    ))),
                    None => {
                        users::put(txn, &name, &record)?;
                        Ok(true)
                    }
                }
            })
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
        let name = crate::binder::ident_name(name);
        users::check_name(&name)?;
        let ast::AlterRoleOperation::WithOptions { options } = operation else {
            return Err(SqlError::unsupported(format!("ALTER USER … {operation}")));
        };
        let mut changes = Changes::default();
        let (mut superuser, mut create_role) = (None, None);
        for option in options {
            match option {
                ast::RoleOption::Password(p) => changes.password = Some(password_text(p)?),
                ast::RoleOption::SuperUser(b) => superuser = Some(*b),
                ast::RoleOption::CreateRole(b) => create_role = Some(*b),
                ast::RoleOption::Login(_) => {}
                other => return Err(SqlError::unsupported(format!("ALTER USER … {other}"))),
            }
        }
        changes.admin = admin_option(superuser, create_role);
        if name == ROOT && changes.admin == Some(false) {
            return Err(SqlError::InsufficientPrivilege(
                "root stays an administrator".into(),
            ));
        }
        let changes = std::sync::Arc::new(changes);
        self.access_ddl(move |txn| {
            let (name, changes) = (name.clone(), changes.clone());
            Box::pin(async move {
                let Some(mut record) = users::get(txn, &name).await? else {
                    return Err(SqlError::UndefinedObject(format!(
                        "user {name} does not exist"
                    )));
                };
                record.name = name.clone();
                if let Some(password) = &changes.password {
                    record.password = password.clone();
                }
                if let Some(admin) = changes.admin {
                    record.admin = admin;
                }
                users::put(txn, &name, &record)?;
                Ok(true)
            })
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
        self.access_ddl(move |txn| {
            let names = names.clone();
            Box::pin(async move {
                let (_, grants) = users::list(txn).await?;
                let mut changed = false;
                for name in &names {
                    if users::get(txn, name).await?.is_some() {
                        users::delete(txn, name)?;
                        for g in grants.iter().filter(|g| &g.user == name) {
                            users::put_grant(txn, name, &g.table, Privileges::default())?;
                        }
                        changed = true;
                    } else if !if_exists {
                        return Err(SqlError::UndefinedObject(format!(
                            "user {name} does not exist"
                        )));
                    }
                }
                Ok(changed)
            })
        })
        .await?;
        Ok(StatementResult::command(CommandTag::DropRole))
    }

    /// `GRANT privileges ON [TABLE] t, … TO u, …` (`revoke` false) or `REVOKE … FROM …`.
    pub(super) async fn grant_or_revoke(
        &mut self,
        privileges: &ast::Privileges,
        objects: Option<&ast::GrantObjects>,
        grantees: &[ast::Grantee],
        revoke: bool,
    ) -> Result<StatementResult> {
        let what = if revoke { "REVOKE" } else { "GRANT" };
        self.check_ddl_allowed(what)?;
        self.check_admin(what).await?;
        let mask = privilege_mask(privileges)?;
        let tables = match objects {
            Some(ast::GrantObjects::Tables(names)) => names
                .iter()
                .map(crate::binder::table_name)
                .collect::<Result<Vec<_>>>()?,
            _ => {
                return Err(SqlError::unsupported(format!(
                    "{what} on anything but tables"
                )))
            }
        };
        let grantees = grantees
            .iter()
            .map(|g| match &g.name {
                Some(ast::GranteeName::ObjectName(name)) => object_name(name),
                _ => Err(SqlError::unsupported(format!("{what} to {g}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        self.access_ddl(move |txn| {
            let (tables, grantees) = (tables.clone(), grantees.clone());
            Box::pin(async move {
                for table in &tables {
                    if crate::catalog::get_table(txn, table).await?.is_none() {
                        return Err(SqlError::UndefinedTable(table.clone()));
                    }
                }
                for user in &grantees {
                    if users::get(txn, user).await?.is_none() {
                        return Err(SqlError::UndefinedObject(format!(
                            "user {user} does not exist"
                        )));
                    }
                    for table in &tables {
                        let held = users::get_grant(txn, user, table).await?;
                        let next = if revoke {
                            held.without(mask)
                        } else {
                            held.union(mask)
                        };
                        users::put_grant(txn, user, table, next)?;
                    }
                }
                Ok(true)
            })
        })
        .await?;
        Ok(StatementResult::command(if revoke {
            CommandTag::Revoke
        } else {
            CommandTag::Grant
        }))
    }

    /// Runs `body` in a transaction of its own that, if `body` changed anything, also bumps
    /// the schema version; retries conflicts ([`super::retrying`]); then waits out every
    /// gateway's schema lease, so the change holds everywhere once this returns.
    async fn access_ddl<F>(&mut self, body: F) -> Result<()>
    where
        F: for<'t> Fn(&'t mut meridian_kv::Txn) -> BoxFuture<'t, Result<bool>>,
    {
        let body = &body;
        let store = self.store.clone();
        let ts = super::retrying(|| {
            let store = store.clone();
            async move {
                let mut txn = meridian_kv::Txn::from(store.begin(None));
                let outcome = async {
                    if body(&mut txn).await? {
                        schema::bump_version(&mut txn).await?;
                    }
                    Ok(txn.commit().await?)
                }
                .await;
                if outcome.is_err() {
                    txn.rollback().await;
                }
                outcome
            }
        })
        .await?;
        self.after_ddl(ts).await;
        Ok(())
    }
}

/// The mask of `GRANT SELECT, INSERT, UPDATE, DELETE | ALL [PRIVILEGES]`.
fn privilege_mask(privileges: &ast::Privileges) -> Result<Privileges> {
    match privileges {
        ast::Privileges::All { .. } => Ok(Privileges::ALL),
        ast::Privileges::Actions(actions) => {
            let mut mask = Privileges::default();
            for action in actions {
                let bit = match action {
                    ast::Action::Select { columns: None } => Privileges::SELECT,
                    ast::Action::Insert { columns: None } => Privileges::INSERT,
                    ast::Action::Update { columns: None } => Privileges::UPDATE,
                    ast::Action::Delete => Privileges::DELETE,
                    other => return Err(SqlError::unsupported(format!("the privilege {other}"))),
                };
                mask = mask.union(bit);
            }
            Ok(mask)
        }
    }
}
