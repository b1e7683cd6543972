package hashiflex

import scala.collection.mutable
import scala.language.implicitConversions
import scala.util.DynamicVariable

/** What each generated module is, for hw_params.json's `modules` table: its name (as Chisel emits it), its kind
  * and the parameters it was built with (hashiflex/report/area_model.py prices a module from these instead of
  * parsing its name). Every module class records itself when it is built; [[collect]] scopes one elaboration.
  */
object ModuleTable {
  private val current = new DynamicVariable[Option[mutable.LinkedHashMap[String, ujson.Obj]]](None)

  /** Record module `name` (its desired name) under the name the Verilog gives it: Chisel drops the characters
    * outside [A-Za-z0-9_$] (a torch layer "features.0.0" builds ShiftAddLayer_features00_...). */
  def record(name: String, kind: String, params: (String, ujson.Value)*): Unit = {
    val legal = legalName(name)
    current.value.foreach(_.getOrElseUpdate(legal, ujson.Obj.from(Seq("name" -> ujson.Str(legal), "kind" -> ujson.Str(kind)) ++ params)))
  }

  def legalName(name: String): String = name.replaceAll("[^A-Za-z0-9_$]", "")

  /** Run `body` (an elaboration) and return what it built, with every module it recorded. */
  def collect[T](body: => T): (T, Seq[ujson.Obj]) = {
    val rows = mutable.LinkedHashMap.empty[String, ujson.Obj]
    val r = current.withValue(Some(rows))(body)
    (r, rows.values.toSeq)
  }

  implicit def int(i: Int): ujson.Value = ujson.Num(i)
  implicit def bool(b: Boolean): ujson.Value = ujson.Bool(b)
  def ints(xs: Seq[Int]): ujson.Value = ujson.Arr.from(xs.map(ujson.Num(_)))
}

/** A join's FIFO: Chisel's Queue (`depth` beats; none when 0), recorded under the name Chisel gives it. */
object Fifo {
  def apply(v: chisel3.util.DecoupledIO[chisel3.Vec[chisel3.UInt]], depth: Int): chisel3.util.DecoupledIO[chisel3.Vec[chisel3.UInt]] =
    if (depth <= 0) v
    else {
      val (lanes, width) = (v.bits.length, v.bits.head.getWidth)
      import ModuleTable._
      ModuleTable.record(s"Queue${depth}_Vec${lanes}_UInt$width", "fifo", "depth" -> depth, "lanes" -> lanes, "width" -> width)
      chisel3.util.Queue(v, depth)
    }
}
