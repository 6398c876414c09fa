use super::*;

#[test]
fn the_clients_meta_commands_are_not_part_of_the_schema() {
    let dump = "\\restrict abc123\nCREATE TABLE a (id int);\n-- a comment \\ inside\n\\unrestrict abc123\n";
    assert_eq!(
        without_meta_commands(dump),
        "CREATE TABLE a (id int);\n-- a comment \\ inside\n"
    );
}
