use std::fs::File as SysFile;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use crate::bplustree::tree::DiskBPlusTree;
use crate::compaction::{CompactionChoice, CompactionInput, CompactionStrategy};
use crate::error::{BackgroundErrorHandler, Result};
use crate::iter::{BoxedLSMIterator, CompactionIterator};
use crate::levels::{write_manifest_to_disk, LevelManifest, ManifestChangeSet};
use crate::lsm::{cleanup_vlog_and_index, CoreInner};
use crate::memtable::ImmutableMemtables;
use crate::snapshot::SnapshotTracker;
use crate::sstable::table::{Table, TableWriter};
use crate::vfs::File;
use crate::vlog::VLog;
use crate::{Comparator, Options as LSMOptions};

/// RAII guard to ensure tables are unhidden if compaction fails
struct HiddenTablesGuard {
	level_manifest: Arc<RwLock<LevelManifest>>,
	table_ids: Vec<u64>,
	committed: bool,
}

impl HiddenTablesGuard {
	fn new(level_manifest: Arc<RwLock<LevelManifest>>, table_ids: &[u64]) -> Self {
		Self {
			level_manifest,
			table_ids: table_ids.to_vec(),
			committed: false,
		}
	}

	fn commit(&mut self) {
		self.committed = true;
	}
}

impl Drop for HiddenTablesGuard {
	fn drop(&mut self) {
		if !self.committed {
			if let Ok(mut levels) = self.level_manifest.write() {
				levels.unhide_tables(&self.table_ids);
			}
		}
	}
}

/// Compaction options
pub(crate) struct CompactionOptions {
	pub(crate) lopts: Arc<LSMOptions>,
	pub(crate) level_manifest: Arc<RwLock<LevelManifest>>,
	pub(crate) immutable_memtables: Arc<RwLock<ImmutableMemtables>>,
	pub(crate) vlog: Option<Arc<VLog>>,
	pub(crate) error_handler: Arc<BackgroundErrorHandler>,
	/// Snapshot tracker for snapshot-aware compaction.
	///
	/// During compaction, we query this to get the list of active snapshot
	/// sequence numbers. Versions visible to any active snapshot must be
	/// preserved (unless hidden by a newer version in the same visibility boundary).
	pub(crate) snapshot_tracker: SnapshotTracker,
	/// Versioned B+ tree index for cleanup after VLog GC
	pub(crate) versioned_index: Option<Arc<parking_lot::RwLock<DiskBPlusTree>>>,
}

impl CompactionOptions {
	pub(crate) fn from(tree: &CoreInner) -> Self {
		Self {
			lopts: Arc::clone(&tree.opts),
			level_manifest: Arc::clone(&tree.level_manifest),
			immutable_memtables: Arc::clone(&tree.immutable_memtables),
			vlog: tree.vlog.clone(),
			error_handler: Arc::clone(&tree.error_handler),
			snapshot_tracker: tree.snapshot_tracker.clone(),
			versioned_index: tree.versioned_index.clone(),
		}
	}
}

/// Handles the compaction state and operations
pub(crate) struct Compactor {
	pub(crate) options: CompactionOptions,
	pub(crate) strategy: Arc<dyn CompactionStrategy>,
}

impl Compactor {
	pub(crate) fn new(options: CompactionOptions, strategy: Arc<dyn CompactionStrategy>) -> Self {
		Self {
			options,
			strategy,
		}
	}

	/// Runs one compaction if a level needs one. Returns whether it moved
	/// data down a level, in which case another may be due (idm's patch:
	/// with outputs cut into small tables, one compaction moves one table,
	/// and the task runs them until none is due).
	pub(crate) fn compact(&self) -> Result<bool> {
		let levels_guard = self.options.level_manifest.write()?;
		let choice = self.strategy.pick_levels(&levels_guard)?;

		match choice {
			CompactionChoice::Merge(input) => {
				self.merge_tables(levels_guard, &input)?;
				Ok(input.target_level != input.source_level)
			}
			CompactionChoice::Skip => Ok(false),
		}
	}

	fn merge_tables(
		&self,
		mut levels: RwLockWriteGuard<'_, LevelManifest>,
		input: &CompactionInput,
	) -> Result<()> {
		// Hide tables that are being merged
		levels.hide_tables(&input.tables_to_merge);

		// Create guard to ensure tables are unhidden on error
		let mut guard = HiddenTablesGuard::new(
			Arc::clone(&self.options.level_manifest),
			&input.tables_to_merge,
		);

		let tables = levels.get_all_tables();
		let to_merge: Vec<_> =
			input.tables_to_merge.iter().filter_map(|&id| tables.get(&id).cloned()).collect();

		// Tables of a sorted level that overlap nothing in the next one move
		// down as they are, unread and unwritten (idm's patch).
		if Self::is_trivial_move(&levels, input) {
			drop(levels);
			let moved = to_merge.into_iter().map(|table| (input.target_level, table)).collect();
			return self.update_manifest(input, moved, &mut guard);
		}

		// Keep tables alive while iterators borrow from them
		let iterators: Vec<BoxedLSMIterator<'_>> = to_merge
			.iter()
			.filter_map(|table| table.iter(None).ok())
			.map(|iter| Box::new(iter) as BoxedLSMIterator<'_>)
			.collect();

		drop(levels);

		// Write merged data; the guard unhides the inputs on error.
		let written = self.write_merged_tables(iterators, input)?;
		let mut new_tables = Vec::with_capacity(written.len());
		for (id, path) in &written {
			match self.open_table(*id, path) {
				Ok(table) => new_tables.push((input.target_level, table)),
				Err(e) => {
					Self::remove_files(&written);
					return Err(e);
				}
			}
		}

		// Update manifest - this will commit the guard on success
		if let Err(e) = self.update_manifest(input, new_tables, &mut guard) {
			Self::remove_files(&written);
			return Err(e);
		}

		self.cleanup_old_tables(input);

		Ok(())
	}

	/// Whether `input` can move its tables to the target level without a
	/// merge: every table comes from a sorted level (L1+, non-overlapping)
	/// and none from the target level, which the strategy has already
	/// searched for overlaps.
	fn is_trivial_move(levels: &LevelManifest, input: &CompactionInput) -> bool {
		if input.source_level == 0 || input.target_level <= input.source_level {
			return false;
		}
		let source = &levels.levels.get_levels()[input.source_level as usize];
		input.tables_to_merge.iter().all(|id| source.tables.iter().any(|t| t.id == *id))
	}

	/// The size at which a compaction ends one output table and begins the
	/// next (idm's patch): a 32nd of L1's target, 8 MiB by default. A level
	/// holds SurrealDB's tables one after the other, some keyed by ids that
	/// grow with time; tables this small mostly hold keys of one of them, so
	/// the next compaction takes only what overlaps and moves the rest down
	/// untouched, and each table's bloom filter is built and probed in cache.
	fn target_table_size(&self) -> usize {
		usize::try_from(self.options.lopts.max_bytes_for_level / 32).unwrap_or(usize::MAX).max(1)
	}

	/// Writes the merge as tables of about [`Self::target_table_size`],
	/// cut only between two user keys (so no user key spans two tables of a
	/// level). Returns the ids and paths of the tables written, none if the
	/// merge dropped every entry.
	fn write_merged_tables(
		&self,
		merge_iter: Vec<BoxedLSMIterator<'_>>,
		input: &CompactionInput,
	) -> Result<Vec<(u64, PathBuf)>> {
		// Get active snapshots for snapshot-aware compaction
		// This is a snapshot of the snapshot list at the start of compaction.
		// Any snapshots created during compaction will be handled by the next compaction.
		let snapshots = self.options.snapshot_tracker.get_all_snapshots();

		// Create a compaction iterator that filters tombstones and respects snapshots
		let max_level = self.options.lopts.level_count - 1;
		let is_bottom_level = input.target_level >= max_level;
		let mut comp_iter = CompactionIterator::new(
			merge_iter,
			Arc::clone(&self.options.lopts.internal_comparator) as Arc<dyn Comparator>,
			is_bottom_level,
			self.options.lopts.enable_versioning,
			self.options.lopts.versioned_history_retention_ns,
			Arc::clone(&self.options.lopts.clock),
			snapshots,
		);

		let target_size = self.target_table_size();
		let mut written: Vec<(u64, PathBuf)> = Vec::new();
		let mut current: Option<TableWriter<SysFile>> = None;
		let mut last_user_key: Vec<u8> = Vec::new();
		let result = (|| -> Result<()> {
			for item in &mut comp_iter {
				let (key, value) = item?;
				let full = current.as_ref().is_some_and(|w| w.written_bytes() >= target_size);
				if full && key.user_key.as_slice() != last_user_key.as_slice() {
					if let Some(writer) = current.take() {
						Self::finish_table(writer, &written)?;
					}
				}
				let writer = match current.as_mut() {
					Some(writer) => writer,
					None => {
						let id = self.options.level_manifest.read()?.next_table_id();
						let path = self.get_table_path(id);
						let file = SysFile::create(&path)?;
						written.push((id, path));
						current.insert(TableWriter::new(
							file,
							id,
							Arc::clone(&self.options.lopts),
							input.target_level,
						))
					}
				};
				last_user_key.clear();
				last_user_key.extend_from_slice(key.user_key.as_slice());
				writer.add(key, &value)?;
			}
			if let Some(writer) = current.take() {
				Self::finish_table(writer, &written)?;
			}
			// Durability fix: the SSTs' data and their directory entries must be
			// durable BEFORE the manifest (fsynced in update_manifest) references
			// them. Otherwise a power loss after the manifest commit leaves a
			// durable manifest pointing at a zero-byte table, with the merged
			// inputs already deleted (surrealdb/surrealdb#7426).
			if !written.is_empty() {
				crate::lsm::fsync_directory(self.options.lopts.sstable_dir())?;
			}
			Ok(())
		})();
		match result {
			Ok(()) => Ok(written),
			Err(e) => {
				drop(current);
				Self::remove_files(&written);
				Err(e)
			}
		}
	}

	/// Finishes the table being written (the last of `written`) and syncs it.
	fn finish_table(writer: TableWriter<SysFile>, written: &[(u64, PathBuf)]) -> Result<()> {
		writer.finish()?;
		if let Some((_, path)) = written.last() {
			crate::vfs::fsync_file(path)?;
		}
		Ok(())
	}

	fn remove_files(written: &[(u64, PathBuf)]) {
		for (_, path) in written {
			let _ = std::fs::remove_file(path);
		}
	}

	fn update_manifest(
		&self,
		input: &CompactionInput,
		new_tables: Vec<(u8, Arc<Table>)>,
		guard: &mut HiddenTablesGuard,
	) -> Result<()> {
		let mut manifest = self.options.level_manifest.write()?;
		let _imm_guard = self.options.immutable_memtables.write();

		let mut changeset = ManifestChangeSet::default();

		// Delete old tables
		for (level_idx, level) in manifest.levels.get_levels().iter().enumerate() {
			for &table_id in &input.tables_to_merge {
				if level.tables.iter().any(|t| t.id == table_id) {
					changeset.deleted_tables.insert((level_idx as u8, table_id));
				}
			}
		}

		// Add the new (or moved) tables
		changeset.new_tables.extend(new_tables);

		let rollback = manifest.apply_changeset(&changeset)?;

		// Write manifest to disk - if this fails, revert in-memory state
		if let Err(e) = write_manifest_to_disk(&manifest) {
			manifest.revert_changeset(rollback);
			self.options
				.error_handler
				.set_error(e.clone(), crate::error::BackgroundErrorReason::ManifestWrite);
			return Err(e);
		}

		// Unhide tables before committing guard (they'll be removed from manifest anyway)
		manifest.unhide_tables(&input.tables_to_merge);

		// Commit guard - tables are now properly handled in manifest
		guard.commit();

		// After successful manifest commit, cleanup obsolete vlog files and stale index entries
		let min_oldest_vlog = manifest.min_oldest_vlog_file_id();
		cleanup_vlog_and_index(
			&self.options.vlog,
			&self.options.versioned_index,
			min_oldest_vlog,
			"compaction",
		);

		Ok(())
	}

	fn get_table_path(&self, table_id: u64) -> PathBuf {
		self.options.lopts.sstable_file_path(table_id)
	}

	fn cleanup_old_tables(&self, input: &CompactionInput) {
		for &table_id in &input.tables_to_merge {
			let path = self.options.lopts.sstable_file_path(table_id);
			if let Err(e) = std::fs::remove_file(path) {
				// Log error but continue with cleanup
				log::warn!("Failed to remove old table file: {e}");
			}
		}
	}

	fn open_table(&self, table_id: u64, table_path: &Path) -> Result<Arc<Table>> {
		let file = SysFile::open(table_path)?;
		let file: Arc<dyn File> = Arc::new(file);
		let file_size = file.size()?;

		Ok(Arc::new(Table::new(table_id, Arc::clone(&self.options.lopts), file, file_size)?))
	}
}
